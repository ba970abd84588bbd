"""Adapters regularised by the evidence: accuracy on a base that is already right, the
predictive intervals, reproducibility, the modes and bad input."""

import warnings

import numpy as np
import pytest
from sklearn.base import clone

from qlsk import FineTuneRegressor, LoraRegressor, MLPRegressor, QueryableLoraRegressor
from qlsk.adapters.calibration import CalibrationWarning

ADAPTERS = [FineTuneRegressor, LoraRegressor, QueryableLoraRegressor]
SMALL = {LoraRegressor: {"rank": 2},
         QueryableLoraRegressor: {"rank": 2, "n_atoms": 4},
         FineTuneRegressor: {}}


def _source(X):
    return np.sin(2 * X[:, 0]) + X[:, 1] ** 2 - X[:, 0] * X[:, 2]


@pytest.fixture(scope="module")
def data():
    """A base pretrained on the source; a target that is the source rescaled, plus noise."""
    rng = np.random.default_rng(0)
    X_source = rng.uniform(-1, 1, (800, 3))
    base = MLPRegressor((32, 32), max_epochs=60, batch_size=64, lr=3e-3,
                        random_state=0).fit(X_source, _source(X_source))
    X_train, X_test = rng.uniform(-1, 1, (40, 3)), rng.uniform(-1, 1, (2000, 3))
    target = lambda X: 2.0 * _source(X) + 0.5  # noqa: E731
    noise = 0.1 * target(X_test).std()
    y_train = target(X_train) + rng.normal(0, noise, len(X_train))
    y_test = target(X_test)
    return base, X_train, y_train, X_test, y_test, noise


def _rmse(model, X, y):
    return float(np.sqrt(np.mean((model.predict(X) - y) ** 2)) / y.std())


@pytest.mark.parametrize("cls", ADAPTERS)
def test_evidence_is_the_default_and_does_not_fit_the_noise(cls, data):
    # The calibrated base is already right here: the fixed recipe fits the noise into
    # it, the evidence keeps the adapter near its start.
    base, X, y, X_test, y_test, noise = data
    model = cls(base=base, random_state=0, **SMALL[cls]).fit(X, y)
    fixed = cls(base=base, random_state=0, regularization="fixed", **SMALL[cls]).fit(X, y)
    assert model.regularization == "evidence"
    assert _rmse(model, X_test, y_test) < 0.8 * _rmse(fixed, X_test, y_test)
    # the learned noise is near the true one
    assert 0.5 * noise < model.noise_std_[0] < 2.0 * noise
    path = model.regularization_path_
    assert model.l2_strength_ in [row["strength"] for row in path]
    best = max(path, key=lambda row: row["log_evidence"])
    assert best["strength"] == model.l2_strength_


@pytest.mark.parametrize("cls", [LoraRegressor, QueryableLoraRegressor])
def test_predictive_intervals_cover_new_observations(cls, data):
    base, X, y, X_test, y_test, noise = data
    model = cls(base=base, random_state=0, **SMALL[cls]).fit(X, y)
    mean, std = model.predict(X_test, return_std=True)
    assert mean.shape == std.shape == (len(X_test),)
    np.testing.assert_allclose(mean, model.predict(X_test), rtol=1e-6)
    assert np.all(std > 0)
    # std of a new observation: never below the noise, and not far above it here
    assert np.all(std >= 0.99 * model.noise_std_[0])
    noisy = y_test + np.random.default_rng(1).normal(0, noise, len(y_test))
    coverage = np.mean(np.abs(noisy - mean) <= 1.645 * std)
    assert 0.8 <= coverage <= 0.98


def test_intervals_widen_away_from_the_data(data):
    base, X, y, _, _, _ = data
    model = FineTuneRegressor(base=base, random_state=0).fit(X, y)
    _, near = model.predict(X, return_std=True)
    far = np.full((5, 3), 3.0)  # outside the box the rows came from
    _, away = model.predict(far, return_std=True)
    assert away.min() > np.median(near)


def test_same_random_state_gives_the_same_numbers(data):
    base, X, y, X_test, _, _ = data
    first = QueryableLoraRegressor(base=base, random_state=3, rank=2, n_atoms=4,
                                   l2_strengths=[1.0, 0.1, 0.01], max_steps=200).fit(X, y)
    second = clone(first).fit(X, y)
    np.testing.assert_array_equal(first.predict(X_test), second.predict(X_test))
    assert first.regularization_path_ == second.regularization_path_


def test_cross_validation_mode(data):
    base, X, y, X_test, y_test, _ = data
    model = LoraRegressor(base=base, rank=2, regularization="cv", l2_strengths=[1.0, 0.1, 0.01],
                          max_steps=200, random_state=0).fit(X, y)
    errors = [row["cv_error"] for row in model.regularization_path_]
    assert np.all(np.isfinite(errors))
    assert model.l2_strength_ == model.regularization_path_[int(np.argmin(errors))]["strength"]
    assert model.predict(X_test, return_std=True)[1].shape == (len(X_test),)


def test_one_strength_is_fitted_as_given(data):
    base, X, y, _, _, _ = data
    model = LoraRegressor(base=base, rank=2, l2_strengths=0.5, random_state=0).fit(X, y)
    assert model.l2_strength_ == 0.5 and len(model.regularization_path_) == 1


def test_fixed_recipe_has_no_intervals(data):
    base, X, y, _, _, _ = data
    model = LoraRegressor(base=base, rank=2, regularization="fixed", max_epochs=3,
                          random_state=0).fit(X, y)
    assert not hasattr(model, "l2_strength_")
    with pytest.raises(ValueError, match="fitted under the fixed recipe, which keeps none$"):
        model.predict(X, return_std=True)
    # parameters changed after the fit: the message says what the model was fitted under
    model.set_params(regularization="evidence")
    with pytest.raises(ValueError, match=r"fixed recipe.*now say regularization='evidence'"
                                         r": fit it again"):
        model.predict(X, return_std=True)


def test_multi_output_intervals(data):
    base_data = data
    rng = np.random.default_rng(0)
    X_source = rng.uniform(-1, 1, (300, 3))
    Y_source = np.column_stack([_source(X_source), X_source[:, 0]])
    base = MLPRegressor((16,), max_epochs=10, random_state=0).fit(X_source, Y_source)
    X = base_data[1]
    Y = np.column_stack([_source(X), 3 * X[:, 0]])
    model = LoraRegressor(base=base, rank=2, l2_strengths=[1.0, 0.01], max_steps=300,
                          random_state=0).fit(X, Y)
    mean, std = model.predict(X[:7], return_std=True)
    assert mean.shape == std.shape == (7, 2)
    assert model.noise_std_.shape == (2,)


def test_bad_input_and_edge_cases(data):
    base, X, y, _, _, _ = data
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # refused before the calibration looks at one row
        with pytest.raises(ValueError, match="at least 2 samples"):
            LoraRegressor(base=base, rank=2).fit(X[:1], y[:1])
    with pytest.raises(ValueError, match="at least 5 samples"):
        LoraRegressor(base=base, rank=2, regularization="cv").fit(X[:3], y[:3])
    for bad in ([], [1.0, -1.0], [np.nan], "strong"):
        with pytest.raises((ValueError, TypeError), match="l2_strengths"):
            LoraRegressor(base=base, l2_strengths=bad).fit(X, y)
    with pytest.raises(ValueError, match="regularization"):
        LoraRegressor(base=base, regularization="bayes").fit(X, y)
    # a constant target: documented to fit, predicting the constant with a small spread
    constant = LoraRegressor(base=base, rank=2, l2_strengths=[1.0, 0.01], max_steps=300,
                             random_state=0).fit(X, np.full(len(X), 3.0))
    mean, std = constant.predict(X[:5], return_std=True)
    np.testing.assert_allclose(mean, 3.0, atol=0.05)
    assert np.all(std < 0.1)


def test_a_base_with_constant_predictions_still_fits(data):
    _, X, y, _, _, _ = data
    flat = MLPRegressor((8,), max_epochs=1, random_state=0).fit(X, np.zeros(len(X)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CalibrationWarning)
        model = LoraRegressor(base=flat, rank=2, l2_strengths=[1.0, 0.01], max_steps=300,
                              random_state=0).fit(X, y)
    assert np.isfinite(model.predict(X, return_std=True)[1]).all()


def test_verbose_says_when_the_curvature_is_subsampled(data, capsys, monkeypatch):
    import qlsk.estimators.regularized as regularized

    base, X, y, _, _, _ = data
    monkeypatch.setattr(regularized, "MAX_ROWS", 20)
    model = LoraRegressor(base=base, rank=2, l2_strengths=[1.0], verbose=1,
                          random_state=0).fit(X, y)
    out = capsys.readouterr().out
    assert "random subset of 20 rows" in out and "l2_strength_=1" in out
    assert model.predict(X, return_std=True)[1].shape == (len(X),)


def test_saved_and_loaded_model_keeps_its_intervals(data, tmp_path):
    import qlsk

    base, X, y, X_test, _, _ = data
    model = QueryableLoraRegressor(base=base, rank=2, n_atoms=4, l2_strengths=[1.0, 0.1],
                                   max_steps=200, random_state=0).fit(X, y)
    qlsk.save(model, tmp_path / "m.qlsk")
    loaded = qlsk.load(tmp_path / "m.qlsk")
    for got, want in zip(loaded.predict(X_test[:50], return_std=True),
                         model.predict(X_test[:50], return_std=True)):
        np.testing.assert_allclose(got, want, rtol=1e-5)
    assert loaded.l2_strength_ == model.l2_strength_
    assert ([row["log_evidence"] for row in loaded.regularization_path_]
            == [row["log_evidence"] for row in model.regularization_path_])


def test_callbacks_need_the_fixed_recipe(data):
    from qlsk import GradientDiagnostics

    base, X, y, _, _, _ = data
    with pytest.raises(ValueError, match="callbacks run only with regularization='fixed'"):
        LoraRegressor(base=base, callbacks=[GradientDiagnostics()]).fit(X, y)
    model = LoraRegressor(base=base, rank=2, max_epochs=2, regularization="fixed",
                          callbacks=[GradientDiagnostics()]).fit(X, y)
    assert "grad_norms" in model.history_[-1]


def test_lbfgs_is_the_default_and_a_random_forward_pass_falls_back_to_adam(data):
    base, X_train, y_train, X_test, _, _ = data
    short = {"base": base, "rank": 2, "l2_strengths": [1e-1, 1e-2], "max_steps": 200,
             "random_state": 0}
    lbfgs = LoraRegressor(**short).fit(X_train, y_train)
    adam = LoraRegressor(**short, optimizer="adam").fit(X_train, y_train)
    assert lbfgs.optimizer == "lbfgs"
    assert not np.array_equal(lbfgs.predict(X_test), adam.predict(X_test))
    # dropout makes the objective random, which a line search cannot take: Adam then
    noisy = {**short, "dropout": 0.1}
    np.testing.assert_array_equal(
        LoraRegressor(**noisy).fit(X_train, y_train).predict(X_test),
        LoraRegressor(**noisy, optimizer="adam").fit(X_train, y_train).predict(X_test))
    with pytest.raises(ValueError, match="optimizer"):
        LoraRegressor(**short, optimizer="sgd").fit(X_train, y_train)
