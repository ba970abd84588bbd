"""MultiFidelityGPRegressor: AR1, NARGP and their weighted mixture on a pretrained base."""

import warnings

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.base import clone
from sklearn.frozen import FrozenEstimator
from sklearn.gaussian_process import GaussianProcessRegressor
from sklearn.linear_model import LinearRegression
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer
from sklearn.utils.estimator_checks import parametrize_with_checks

import qlsk
from qlsk import MLPRegressor, MultiFidelityGPRegressor
from qlsk.estimators.multifidelity import RULES, combine
from qlsk.tuning import tune

pytestmark = [pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning"),
              pytest.mark.usefixtures("one_blas_thread")]


def source(X):
    return np.sin(3 * X[:, 0]) + X[:, 1] ** 2 + 0.5 * X[:, 2]


def scaled(X):
    """The source rescaled and shifted, plus a small smooth discrepancy: AR1's model."""
    return 2.0 * source(X) + 1.0 + 0.2 * np.cos(2 * X[:, 1])


def warped(X):
    """A non-linear function of the source: NARGP's model, not AR1's."""
    return np.sin(2.5 * source(X))


def draw(n, seed, truth, noise=0.05):
    rng = np.random.default_rng(seed)
    X = rng.uniform(-1, 1, (n, 3))
    return X, truth(X) + noise * rng.standard_normal(n)


X_TEST = np.random.default_rng(99).uniform(-1, 1, (500, 3))


def rmse(pred, truth):
    return float(np.sqrt(np.mean((pred - truth(X_TEST)) ** 2)))


class Source:
    """A fitted "base" that is the source function itself (any object with predict)."""

    def predict(self, X):
        return source(np.asarray(X, dtype=float))


@pytest.fixture(scope="module")
def mlp_base():
    X = np.random.default_rng(0).uniform(-1, 1, (300, 3))
    return MLPRegressor(hidden_layer_sizes=(32, 32), max_epochs=30, batch_size=64,
                        random_state=0).fit(X, source(X))


# "auto" fits, weighs and predicts with both kinds: the fixed kinds are parts of it
@parametrize_with_checks([MultiFidelityGPRegressor(n_restarts_optimizer=0, random_state=0)])
def test_sklearn_contract(estimator, check):
    check(estimator)


def test_ar1_recovers_the_scale_and_shift_of_a_rescaled_source():
    X, y = draw(40, 0, scaled)
    model = MultiFidelityGPRegressor(Source(), kind="ar1", random_state=0).fit(X, y)
    assert model.rho_ == pytest.approx(2.0, abs=0.1)
    assert model.c_ == pytest.approx(1.0, abs=0.15)
    # the base carries the source: 40 rows reach an error no target-only GP reaches
    alone = MultiFidelityGPRegressor(kind="ar1", random_state=0).fit(X, y)
    assert rmse(model.predict(X_TEST), scaled) < 0.5 * rmse(alone.predict(X_TEST), scaled)


@pytest.mark.parametrize("truth", [scaled, warped])
def test_auto_is_as_good_as_the_better_kind(truth):
    X, y = draw(60, 1, truth)
    auto = MultiFidelityGPRegressor(Source(), random_state=0).fit(X, y)
    errors = {k: rmse(MultiFidelityGPRegressor(Source(), kind=k, random_state=0).fit(
        X, y).predict(X_TEST), truth) for k in ("ar1", "nargp")}
    assert rmse(auto.predict(X_TEST), truth) <= 1.1 * min(errors.values())
    if truth is warped:  # AR1 cannot bend the source: 14x worse, and left out
        assert errors["ar1"] > 5 * errors["nargp"]
        assert auto.weights_["nargp"] > 0.99 and auto.kind_ == "nargp"


def test_auto_holds_exactly_the_fixed_kinds_fits():
    X, y = draw(50, 2, warped)
    auto = MultiFidelityGPRegressor(Source(), auto_weights="equal", random_state=3).fit(X, y)
    parts = [MultiFidelityGPRegressor(Source(), kind=k, random_state=3).fit(X, y)
             for k in ("ar1", "nargp")]
    means, stds = zip(*(p.predict(X_TEST, return_std=True) for p in parts))
    mean, std = auto.predict(X_TEST, return_std=True)
    np.testing.assert_allclose(mean, (means[0] + means[1]) / 2, rtol=1e-10)
    mixture_var = (stds[0] ** 2 + means[0] ** 2 + stds[1] ** 2 + means[1] ** 2) / 2 - mean ** 2
    np.testing.assert_allclose(std, np.sqrt(mixture_var), rtol=1e-8)
    for kind, part in zip(("ar1", "nargp"), parts):
        assert auto.scores_[kind]["loo_rmse"] == pytest.approx(part.scores_[kind]["loo_rmse"])


def test_leave_one_out_matches_refitting_without_each_row():
    X, y = draw(25, 3, warped)
    model = MultiFidelityGPRegressor(Source(), kind="nargp", random_state=0).fit(X, y)
    fit = model.fits_["nargp"]
    inputs = fit.gp.X_train_
    for i in (0, 7, 24):
        keep = np.arange(len(y)) != i
        # the same hyperparameters, and the same target normalisation, without row i
        gp = GaussianProcessRegressor(fit.gp.kernel_, optimizer=None).fit(
            inputs[keep], (y[keep] - fit.gp._y_train_mean) / fit.gp._y_train_std)
        mean, std = gp.predict(inputs[i:i + 1], return_std=True)
        assert fit.loo_mean[i] == pytest.approx(
            mean[0] * fit.gp._y_train_std + fit.gp._y_train_mean, rel=1e-5)
        # both the std of a new observation: the white kernel's diagonal holds the noise
        assert fit.loo_std[i] == pytest.approx(std[0] * fit.gp._y_train_std, rel=1e-5)


def test_combine_rules():
    rng = np.random.default_rng(0)
    y = rng.standard_normal(200)
    good, bad = y + 0.1 * rng.standard_normal(200), y + 1.0 * rng.standard_normal(200)
    means, stds = [good, bad], [np.full(200, 0.1), np.full(200, 1.0)]
    for rule in RULES:
        w = combine(means, stds, y, [0.0, -1.0], rule)
        assert w.sum() == pytest.approx(1.0) and (w >= 0).all()
        assert w[0] >= 0.5
    assert combine(means, stds, y, [0.0, -1.0], "stacking")[0] > 0.95
    np.testing.assert_allclose(combine(means, stds, y, [0.0, 0.0], "equal"), [0.5, 0.5])
    np.testing.assert_allclose(combine(means, stds, y, [0.0, -np.log(3)], "evidence"),
                               [0.75, 0.25])
    # stacking maximises the mixture's leave-one-out log density over the weights
    half = [y + 0.5 * rng.standard_normal(200), y + 0.5 * rng.standard_normal(200)]
    s = [np.full(200, 0.3), np.full(200, 0.8)]
    w = combine(half, s, y, [0, 0], "stacking")

    def density(a):
        p = [np.exp(-0.5 * ((y - m) / sd) ** 2) / sd for m, sd in zip(half, s)]
        return np.log(a * p[0] + (1 - a) * p[1]).sum()

    grid = np.linspace(0, 1, 1001)
    assert density(w[0]) >= max(density(a) for a in grid) - 1e-6
    with pytest.raises(ValueError, match="rule must be one of"):
        combine(means, stds, y, [0, 0], "vote")


def test_intervals_cover_new_observations():
    X, y = draw(80, 4, scaled, noise=0.1)
    model = MultiFidelityGPRegressor(Source(), random_state=0).fit(X, y)
    mean, std = model.predict(X_TEST, return_std=True)
    noisy = scaled(X_TEST) + 0.1 * np.random.default_rng(5).standard_normal(len(X_TEST))
    coverage = np.mean(np.abs(noisy - mean) <= 1.645 * std)
    assert 0.8 <= coverage <= 0.99


def test_max_rows_fits_the_gps_on_a_seeded_subset():
    X, y = draw(60, 7, scaled)
    sub = MultiFidelityGPRegressor(Source(), kind="ar1", max_rows=25, random_state=3).fit(X, y)
    keep = np.random.default_rng(3).permutation(60)[:25]
    alone = MultiFidelityGPRegressor(Source(), kind="ar1", random_state=3).fit(X[keep],
                                                                              y[keep])
    assert sub.n_rows_fitted_ == 25 and alone.n_rows_fitted_ == 25
    np.testing.assert_array_equal(sub.fits_["ar1"].gp.X_train_, alone.fits_["ar1"].gp.X_train_)
    np.testing.assert_allclose(sub.predict(X_TEST), alone.predict(X_TEST))
    full = MultiFidelityGPRegressor(Source(), kind="ar1", max_rows=60, random_state=3)
    assert full.fit(X, y).n_rows_fitted_ == 60
    with pytest.raises(ValueError, match="max_rows"):
        MultiFidelityGPRegressor(max_rows=2).fit(X, y)


def test_same_random_state_same_predictions(mlp_base):
    X, y = draw(40, 5, warped)
    a = MultiFidelityGPRegressor(mlp_base, random_state=11).fit(X, y).predict(X_TEST)
    b = MultiFidelityGPRegressor(mlp_base, random_state=11).fit(X, y).predict(X_TEST)
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("wrap", ["estimator", "frozen", "module", "path", "sklearn"])
def test_every_kind_of_base(mlp_base, wrap, tmp_path):
    X, y = draw(30, 6, scaled)
    if wrap == "path":
        qlsk.save(mlp_base, tmp_path / "base.qlsk")
    base = {"estimator": mlp_base, "frozen": FrozenEstimator(mlp_base),
            "module": mlp_base.net_.module_, "path": str(tmp_path / "base.qlsk"),
            "sklearn": LinearRegression().fit(X, source(X))}[wrap]
    model = MultiFidelityGPRegressor(base, kind="ar1", random_state=0).fit(X, y)
    reference = LinearRegression().fit(X, source(X)) if wrap == "sklearn" else mlp_base
    np.testing.assert_allclose(model.predict(X_TEST), model.fits_["ar1"].gp.predict(
        (X_TEST - model.lo_) / model.span_) + model.rho_ * reference.predict(X_TEST)
        + model.c_, rtol=1e-5, atol=1e-6)
    assert clone(model).base is base  # shared, never refitted


def test_pipeline_and_grid_search_over_kind():
    X, y = draw(45, 7, warped)
    search = GridSearchCV(make_pipeline(FunctionTransformer(), MultiFidelityGPRegressor(
        Source(), random_state=0)), {"multifidelitygpregressor__kind": ["ar1", "nargp"]},
        cv=3).fit(X, y)
    assert search.best_params_["multifidelitygpregressor__kind"] == "nargp"


def test_tune_searches_the_kind():
    X, y = draw(45, 8, warped)
    study, best = tune(MultiFidelityGPRegressor(Source(), random_state=0), X, y, n_trials=4,
                       random_state=0)
    assert set(study.best_params) == {"kind"}
    assert best.kind == study.best_params["kind"] and hasattr(best, "fits_")
    with pytest.raises(ValueError, match="without a pruner"):
        tune(MultiFidelityGPRegressor(Source()), X, y, n_trials=1, pruner="median")


def test_save_and_load_round_trip(mlp_base, tmp_path):
    X, y = draw(40, 9, warped)
    frame = pd.DataFrame(X, columns=["a", "b", "c"])
    base = MLPRegressor(hidden_layer_sizes=(16,), max_epochs=5, random_state=0).fit(
        frame, source(X))
    for model in (MultiFidelityGPRegressor(base, random_state=0).fit(frame, y),
                  MultiFidelityGPRegressor(kind="nargp", random_state=0).fit(X, y)):
        path = tmp_path / f"{model.kind}.qlsk"
        qlsk.save(model, path)
        loaded = qlsk.load(path)
        test = (pd.DataFrame(X_TEST, columns=["a", "b", "c"]) if model.base is not None
                else X_TEST)
        for a, b in zip(model.predict(test, return_std=True),
                        loaded.predict(test, return_std=True)):
            np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12)
        assert loaded.weights_ == model.weights_ and loaded.kind_ == model.kind_
        assert loaded.n_rows_fitted_ == model.n_rows_fitted_
        assert loaded.get_params()["kind"] == model.kind
        with pytest.raises(FileExistsError):
            qlsk.save(model, path)


def test_a_file_with_a_broken_gp_is_refused(tmp_path):
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    X, y = draw(20, 10, scaled)
    path = tmp_path / "gp.qlsk"
    qlsk.save(MultiFidelityGPRegressor(kind="ar1").fit(X, y), path)

    with safe_open(str(path), "pt") as f:
        meta = f.metadata()
    tensors = load_file(str(path))
    del tensors["gp/ar1/inputs"]
    save_file(tensors, str(tmp_path / "broken.qlsk"), metadata=meta)
    with pytest.raises(ValueError, match="incomplete or inconsistent"):
        qlsk.load(tmp_path / "broken.qlsk")


def test_bad_input_is_named(mlp_base):
    X, y = draw(30, 11, scaled)
    with pytest.raises(ValueError, match="n_samples=2"):
        MultiFidelityGPRegressor(Source()).fit(X[:2], y[:2])
    with pytest.raises(ValueError, match="bounds must have shape"):
        MultiFidelityGPRegressor(bounds=[[0, 1]]).fit(X, y)

    class Broken:
        def predict(self, X):
            out = source(np.asarray(X))
            out[3] = np.nan
            return out

    with pytest.raises(ValueError, match="NaN or infinity on 1 of 30 rows"):
        MultiFidelityGPRegressor(Broken()).fit(X, y)

    class Constant:
        def predict(self, X):
            return np.ones(len(X))

    with pytest.warns(UserWarning, match="same on every training row"):
        model = MultiFidelityGPRegressor(Constant(), random_state=0).fit(X, y)
    assert np.isfinite(model.predict(X_TEST)).all()
    with pytest.raises(TypeError, match="base must be a fitted regressor"):
        MultiFidelityGPRegressor(object()).fit(X, y)
    with pytest.raises(ValueError, match="one value per row"):
        MultiFidelityGPRegressor(torch.nn.Linear(3, 2)).fit(X, y)
    with pytest.raises(ValueError, match="features"):
        MultiFidelityGPRegressor(mlp_base).fit(X, y).predict(X_TEST[:, :2])
    with pytest.raises(ValueError, match="could not convert|string"):
        MultiFidelityGPRegressor().fit(np.array([["a", "b", "c"]] * 5), y[:5])


def test_columns_are_checked_against_the_base():
    X, y = draw(30, 12, scaled)
    frame = pd.DataFrame(X, columns=["a", "b", "c"])
    base = MLPRegressor(hidden_layer_sizes=(16,), max_epochs=3, random_state=0).fit(
        frame, source(X))
    with pytest.raises(ValueError, match="differ from those the base was fitted with"):
        MultiFidelityGPRegressor(base).fit(frame[["b", "a", "c"]], y)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        MultiFidelityGPRegressor(base, kind="ar1").fit(frame, y).predict(frame)
