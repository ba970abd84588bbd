"""The one writer of qlsk's files: atomic, never overwriting unasked, readable as a
plain file would be."""

import os
import stat

import pytest
import torch

from qlsk.files import write_safetensors


def test_written_atomically_with_the_permissions_of_a_plain_file(tmp_path):
    path = tmp_path / "a.safetensors"
    write_safetensors(path, {"w": torch.ones(2)}, {"format": "x"})
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask
    with pytest.raises(FileExistsError, match="overwrite=True"):
        write_safetensors(path, {"w": torch.zeros(2)})
    write_safetensors(path, {"w": torch.zeros(3)}, overwrite=True)
    from safetensors.torch import load_file

    assert load_file(path)["w"].shape == (3,)
    assert sorted(os.listdir(tmp_path)) == ["a.safetensors"]  # no temporary file left
    with pytest.raises(FileNotFoundError, match="does not exist"):
        write_safetensors(tmp_path / "missing" / "b.safetensors", {"w": torch.ones(1)})
