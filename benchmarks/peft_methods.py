"""PEFT's own LoRA and VB-LoRA as external reference implementations (``qlsk[bench]``).

They adapt the same base MLP through the same skorch training loop as qlsk's
estimators; only the adapter differs. VB-LoRA's vectors must divide every adapted
layer's widths, so it adapts the hidden-to-hidden layers only.
"""

from __future__ import annotations

from torch import nn

from qlsk import FineTuneRegressor


class PeftRegressor(FineTuneRegressor):
    """Adapt a base with a PEFT method instead of qlsk's adapters.

    Parameters
    ----------
    peft_method : {"lora", "vblora"}
        ``LoraConfig`` on every linear layer, or ``VBLoRAConfig`` on the hidden ones.
    rank : int
        Rank of the updates.
    **kwargs
        As for :class:`qlsk.FineTuneRegressor`.
    """

    def __init__(self, base=None, peft_method="lora", rank=4, hidden_layer_sizes=(64, 64, 64),
                 lr=1e-3, weight_decay=0.0, max_epochs=200, batch_size=32,
                 early_stopping=False, validation_fraction=0.1, patience=20, device="cpu",
                 random_state=None, verbose=0, callbacks=None):
        super().__init__(  # PEFT's methods as published: no output calibration
            base=base, output_calibration=False, regularization="fixed",
            hidden_layer_sizes=hidden_layer_sizes, lr=lr,
            weight_decay=weight_decay, max_epochs=max_epochs, batch_size=batch_size,
            early_stopping=early_stopping, validation_fraction=validation_fraction,
            patience=patience, device=device, random_state=random_state, verbose=verbose,
            callbacks=callbacks)
        self.peft_method = peft_method
        self.rank = rank

    def _adapt(self, module):
        from peft import LoraConfig, VBLoRAConfig, get_peft_model

        linears = [(n, m) for n, m in module.named_modules() if isinstance(m, nn.Linear)]
        if self.peft_method == "lora":
            config = LoraConfig(r=self.rank, lora_alpha=4 * self.rank,
                                target_modules=[n for n, _ in linears])
        elif self.peft_method == "vblora":
            hidden = [n for n, m in linears if m.in_features % 16 == 0
                      and m.out_features % 16 == 0]
            config = VBLoRAConfig(r=self.rank, num_vectors=32, vector_length=16, topk=2,
                                  target_modules=hidden)
        else:
            raise ValueError(f"unknown peft_method {self.peft_method!r}")
        return get_peft_model(module, config)


def available() -> bool:
    try:
        import peft  # noqa: F401
    except ImportError:
        return False
    return True
