"""The one writer of qlsk's files: safetensors with JSON metadata, written atomically.

:func:`qlsk.save`, :func:`qlsk.adapters.save_adapter` and the shared memory's
``save_memory`` all write through :func:`write_safetensors`: the tensors go to a
temporary file in the target folder, which then replaces ``path`` in one step, so an
interrupted save never leaves half a file, and an existing file is never replaced
unless ``overwrite`` says so.
"""

from __future__ import annotations

import json
import os
import tempfile

import torch


def write_safetensors(path, tensors: dict[str, torch.Tensor], metadata: dict | None = None,
                      overwrite: bool = False) -> None:
    """Write ``tensors`` (and ``metadata`` as JSON under the key ``"qlsk"``) to ``path``.

    Parameters
    ----------
    path : str or os.PathLike
        The file to write.
    tensors : dict of str to torch.Tensor
        Copied to the CPU and made contiguous before writing.
    metadata : dict or None, default=None
        JSON-serialisable facts stored in the file's header.
    overwrite : bool, default=False
        Replace an existing file. Without it an existing file is never touched.

    Raises
    ------
    FileExistsError
        If ``path`` exists (or appears while writing) and ``overwrite`` is False.
    FileNotFoundError
        If the folder of ``path`` does not exist.
    """
    from safetensors.torch import save_file

    path = os.fspath(path)
    if os.path.exists(path) and not overwrite:
        raise FileExistsError(f"{path} exists; pass overwrite=True to replace it")
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):  # else mkstemp names its temporary file, not path
        raise FileNotFoundError(f"cannot save {path}: the folder {directory} does not exist")
    tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    header = None if metadata is None else {"qlsk": json.dumps(metadata)}
    fd, tmp = tempfile.mkstemp(dir=directory, suffix=".tmp")
    os.close(fd)
    try:
        save_file(tensors, tmp, metadata=header)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # what a plain open() would give, not mkstemp's 0600
        with open(tmp, "rb") as f:  # on disk before it takes the name
            os.fsync(f.fileno())
        if not overwrite and os.path.exists(path):
            raise FileExistsError(f"{path} appeared while saving; nothing was overwritten")
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
