"""Small builders shared by several test modules (imported as ``tests.helpers``: ``tests``
is a package, and pytest puts the repository root on the path)."""

import torch
from torch import nn


def mlp(n_in=4, width=16, depth=4, seed=0):
    """A plain torch MLP of ``depth`` linear layers with SiLU between them."""
    torch.manual_seed(seed)
    layers = [nn.Linear(n_in, width), nn.SiLU()]
    for _ in range(depth - 2):
        layers += [nn.Linear(width, width), nn.SiLU()]
    return nn.Sequential(*layers, nn.Linear(width, 1))


def without_param(path, name, out):
    """A copy at ``out`` of the model saved at ``path`` whose metadata lacks parameter
    ``name``: what ``qlsk.save`` wrote before that parameter existed."""
    import json

    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(path), framework="pt") as f:
        metadata, tensors = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}
    meta = json.loads(metadata["qlsk"])
    del meta["params"][name]
    save_file(tensors, str(out), metadata={**metadata, "qlsk": json.dumps(meta)})
    return out
