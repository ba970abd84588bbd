"""Output calibration: least-squares start, the fallback, the shrinkage prior, training."""

import pytest
import torch
from torch import nn

from qlsk.adapters import count_trainable_parameters, inject
from qlsk.adapters.calibration import (
    CalibrationWarning,
    OutputCalibration,
    least_squares_calibration,
)


def data(n=40, seed=0):
    g = torch.Generator().manual_seed(seed)
    f = torch.randn(n, 2, generator=g, dtype=torch.float64)
    return f, g


def test_least_squares_recovers_scale_and_shift_per_output():
    f, _ = data()
    y = f * torch.tensor([3.0, -0.5], dtype=torch.float64) + torch.tensor([2.0, 1.0],
                                                                          dtype=torch.float64)
    rho, c = least_squares_calibration(f, y)
    torch.testing.assert_close(rho, torch.tensor([3.0, -0.5]))
    torch.testing.assert_close(c, torch.tensor([2.0, 1.0]))
    rho, c = least_squares_calibration(f[:, 0].numpy(), y[:, 0].numpy())  # 1-D, numpy
    assert rho.shape == c.shape == (1,)
    torch.testing.assert_close(rho, torch.tensor([3.0]))


@pytest.mark.parametrize("shrinkage", [0.0, 10.0, 40.0, 1e6])
def test_shrinkage_solves_the_penalised_least_squares(shrinkage):
    f, g = data(n=40, seed=1)
    f, y = f[:, :1], 2.5 * f[:, :1] - 1.0 + 0.3 * torch.randn(40, 1, generator=g,
                                                               dtype=torch.float64)
    rho, c = least_squares_calibration(f, y, shrinkage=shrinkage)
    # Brute force: least squares on the rows plus sqrt(m / n)-weighted "base is right" rows.
    w = (shrinkage / len(f)) ** 0.5
    A = torch.cat([torch.cat([f, torch.ones_like(f)], 1),
                   w * torch.cat([f, torch.ones_like(f)], 1)])
    b = torch.cat([y, w * f])
    expected = torch.linalg.lstsq(A, b).solution.flatten().float()
    torch.testing.assert_close(torch.cat([rho, c]), expected, rtol=1e-4, atol=1e-5)
    rho_ls, c_ls = least_squares_calibration(f, y)
    n = len(f)
    torch.testing.assert_close(rho, (n * rho_ls + shrinkage) / (n + shrinkage))
    torch.testing.assert_close(c, n * c_ls / (n + shrinkage))


def test_constant_base_falls_back_to_identity_with_a_warning():
    f = torch.full((20, 1), 3.0)
    y = torch.linspace(0, 1, 20)[:, None] + 5
    with pytest.warns(CalibrationWarning, match="constant"):
        rho, c = least_squares_calibration(f, y)
    torch.testing.assert_close(rho, torch.tensor([1.0]))
    torch.testing.assert_close(c, (y - f).mean(0))


def test_rho_near_zero_falls_back_only_for_that_output():
    f, g = data(n=50, seed=2)
    noise = torch.randn(50, generator=g, dtype=torch.float64)
    centred = f[:, 1] - f[:, 1].mean()
    unrelated = noise - (noise @ centred) / (centred @ centred) * centred  # corr(f, y) = 0
    y = torch.stack([2 * f[:, 0], unrelated], 1)
    with pytest.warns(CalibrationWarning, match=r"output\(s\) \[1\]"):
        rho, c = least_squares_calibration(f, y)
    assert rho[0] == pytest.approx(2.0) and rho[1] == 1.0


def test_a_base_in_another_unit_is_not_mistaken_for_no_signal():
    f, _ = data()
    y = 1e-3 * f  # rho = 0.001 is a unit change, not a missing signal
    rho, _ = least_squares_calibration(f, y)
    torch.testing.assert_close(rho, torch.tensor([1e-3, 1e-3]))


@pytest.mark.parametrize("f, y, message", [
    (torch.tensor([[1.0], [float("nan")]]), torch.ones(2, 1), "base's predictions"),
    (torch.tensor([[1.0], [float("inf")]]), torch.ones(2, 1), "base's predictions"),
    (torch.ones(2, 1), torch.tensor([[1.0], [float("nan")]]), "y contains"),
    (torch.ones(3, 1), torch.ones(3, 2), "do not match"),
    (torch.ones(0, 1), torch.ones(0, 1), "at least one row"),
])
def test_bad_input_raises(f, y, message):
    with pytest.raises(ValueError, match=message):
        least_squares_calibration(f, y)


def test_negative_shrinkage_raises():
    with pytest.raises(ValueError, match="shrinkage"):
        least_squares_calibration(torch.randn(5, 1), torch.randn(5, 1), shrinkage=-1)


def test_module_computes_rho_g_plus_c_and_trains_only_rho_c_and_the_adapter():
    torch.manual_seed(0)
    base = nn.Sequential(nn.Linear(3, 8), nn.Tanh(), nn.Linear(8, 2))
    adapted = inject(base, "lora", rank=2)
    n_lora = count_trainable_parameters(adapted)
    model = OutputCalibration(adapted, rho=[2.0, 3.0], c=[0.5, -1.0])
    X = torch.randn(5, 3)
    torch.testing.assert_close(model(X), adapted(X) * torch.tensor([2.0, 3.0])
                               + torch.tensor([0.5, -1.0]))
    assert count_trainable_parameters(model) == n_lora + 4
    model(X).sum().backward()
    assert model.rho.grad is not None and model.c.grad is not None
    assert all(p.grad is None for n, p in model.named_parameters() if "lora" not in n
               and n not in ("rho", "c"))
    state = model.state_dict()
    assert {"rho", "c", "prior_precision"} <= set(state)
    copy = OutputCalibration(inject(nn.Sequential(nn.Linear(3, 8), nn.Tanh(),
                                                  nn.Linear(8, 2)), "lora", rank=2), [1, 1])
    copy.load_state_dict(state)
    torch.testing.assert_close(copy(X), model(X))


def test_penalty_is_the_prior_on_how_far_the_outputs_move():
    f, _ = data(n=30)
    y = 2 * f + 1
    model = OutputCalibration.from_predictions(nn.Identity(), f, y, shrinkage=15.0,
                                               scale=[2.0, 4.0])
    with torch.no_grad():
        model.rho.copy_(torch.tensor([1.5, 0.7]))
        model.c.copy_(torch.tensor([0.2, -0.3]))
    moved = ((model.rho.double() - 1) * f + model.c.double()) / torch.tensor(
        [2.0, 4.0], dtype=torch.float64)
    expected = 15.0 / 30 * (moved ** 2).mean()
    torch.testing.assert_close(model.penalty().double(), expected, rtol=1e-5, atol=1e-7)
    assert OutputCalibration(nn.Identity(), 3.0, 1.0).penalty() == 0  # no prior


def test_from_predictions_starts_at_the_minimiser_of_loss_plus_penalty():
    f, g = data(n=25, seed=3)
    y = 1.8 * f + 0.5 + 0.2 * torch.randn(25, 2, generator=g, dtype=torch.float64)
    model = OutputCalibration.from_predictions(nn.Identity(), f, y, shrinkage=25.0)
    scale = y.std(0, unbiased=False).float()

    def objective():
        return (((model(f.float()) - y.float()) / scale) ** 2).mean() + model.penalty()

    start = objective().item()
    optimizer = torch.optim.SGD([model.rho, model.c], lr=0.05)
    for _ in range(200):
        optimizer.zero_grad()
        objective().backward()
        optimizer.step()
    assert objective().item() >= start - 1e-5  # already at the optimum


def test_strong_shrinkage_holds_rho_near_one_while_training():
    f, _ = data(n=20, seed=4)
    y = 3 * f  # the data pull rho to 3
    free = OutputCalibration.from_predictions(nn.Identity(), f, y, shrinkage=0.0)
    held = OutputCalibration.from_predictions(nn.Identity(), f, y, shrinkage=200.0)
    for model in (free, held):
        with torch.no_grad():
            model.rho.fill_(1.0)
            model.c.zero_()
        optimizer = torch.optim.Adam([model.rho, model.c], lr=0.05)
        for _ in range(300):
            optimizer.zero_grad()
            loss = (((model(f.float()) - y.float())) ** 2).mean() / y.var() + model.penalty()
            loss.backward()
            optimizer.step()
    assert free.rho.detach() == pytest.approx([3.0, 3.0], abs=0.05)
    assert (held.rho.detach() - 1).abs().max() < 0.3


def test_a_base_wrong_in_scale_is_fixed_by_calibration_alone():
    torch.manual_seed(0)
    base = nn.Sequential(nn.Linear(2, 16), nn.Tanh(), nn.Linear(16, 1))
    X = torch.randn(64, 2)
    with torch.no_grad():
        f = base(X)
    y = 4 * f - 2  # right in shape, wrong in scale and offset
    model = OutputCalibration.from_predictions(base.requires_grad_(False), f, y)
    with torch.no_grad():
        assert torch.allclose(model(X), y, atol=1e-4)
