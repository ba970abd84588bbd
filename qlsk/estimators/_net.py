"""The skorch plumbing behind the estimators: the net and its mini-batches."""

from __future__ import annotations

import math

import numpy as np
import torch
from skorch import NeuralNetRegressor


class _Batches:
    """Mini-batches sliced from whole tensors: far fewer calls than a DataLoader."""

    def __init__(self, dataset, batch_size: int, shuffle: bool, generator=None):
        indices = None
        if isinstance(dataset, torch.utils.data.Subset):
            dataset, indices = dataset.dataset, np.asarray(dataset.indices)
        X, y = dataset.X, dataset.y
        if indices is not None:
            X, y = X[indices], (None if y is None else y[indices])
        self.X = torch.as_tensor(X)
        self.y = None if y is None else torch.as_tensor(y)
        self.batch_size, self.shuffle, self.generator = batch_size, shuffle, generator

    def __len__(self) -> int:
        return math.ceil(len(self.X) / self.batch_size)

    def __iter__(self):
        n = len(self.X)
        order = torch.randperm(n, generator=self.generator) if self.shuffle else None
        for start in range(0, n, self.batch_size):
            if order is None:
                index = slice(start, start + self.batch_size)
            else:
                index = order[start:start + self.batch_size]
            yield self.X[index], (None if self.y is None else self.y[index])


class Net(NeuralNetRegressor):
    """skorch's regressor, training only parameters that require gradients.

    Parameters
    ----------
    seed : int
        Seed of the shuffling of training batches.
    predict_batch_size : int
        Rows per forward pass at validation and prediction time.
    """

    def __init__(self, *args, seed: int = 0, predict_batch_size: int = 4096, **kwargs):
        super().__init__(*args, **kwargs)
        self.seed = seed
        self.predict_batch_size = predict_batch_size

    def get_loss(self, y_pred, y_true, X=None, training=False):
        loss = super().get_loss(y_pred, y_true, X=X, training=training)
        penalty = getattr(self.module_, "penalty", None)  # a prior on the module's own terms
        return loss + penalty() if training and penalty is not None else loss

    def get_all_learnable_params(self):
        for name, param in super().get_all_learnable_params():
            if param.requires_grad:
                yield name, param

    def get_iterator(self, dataset, training=False):
        if training:
            if getattr(self, "_generator", None) is None:
                self._generator = torch.Generator().manual_seed(self.seed)
            return _Batches(dataset, self.batch_size, True, self._generator)
        return _Batches(dataset, max(self.batch_size, self.predict_batch_size), False)

    def initialize(self):
        self._generator = None
        return super().initialize()

    def _set_training(self, training=True):
        # skorch sets the mode of every submodule before every batch; once per switch
        # is enough, and saves ~10% of a small network's step.
        if getattr(self, "module_", None) is None or self.module_.training != training:
            super()._set_training(training)


# Where these lived before qlsk/nn.py and callbacks.py: pickles written then name them
# here, so they stay importable from this module.
from ..nn import MLP, ScaledMSELoss  # noqa: E402, F401
from .callbacks import EpochProgress, StopOnDivergence, TrainingDivergedError  # noqa: E402, F401
