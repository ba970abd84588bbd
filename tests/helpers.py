"""Small builders shared by several test modules (imported as ``helpers``: pytest puts
this folder on the path)."""

import torch
from torch import nn


def mlp(n_in=4, width=16, depth=4, seed=0):
    """A plain torch MLP of ``depth`` linear layers with SiLU between them."""
    torch.manual_seed(seed)
    layers = [nn.Linear(n_in, width), nn.SiLU()]
    for _ in range(depth - 2):
        layers += [nn.Linear(width, width), nn.SiLU()]
    return nn.Sequential(*layers, nn.Linear(width, 1))
