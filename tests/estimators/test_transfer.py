"""TransferRegressor: method "auto" chooses or stacks candidates by cross-validation."""

import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone
from sklearn.dummy import DummyRegressor
from sklearn.linear_model import LinearRegression, Ridge
from sklearn.model_selection import GridSearchCV, KFold, cross_val_predict
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer
from sklearn.utils.estimator_checks import parametrize_with_checks

from qlsk import MLPRegressor, MultiFidelityGPRegressor, TransferRegressor
from qlsk.estimators.transfer import default_candidates, stack_weights

pytestmark = [pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning"),
              pytest.mark.usefixtures("one_blas_thread")]


def truth(X):
    return np.sin(3 * X[:, 0]) + X[:, 1] ** 2


def draw(n, seed, noise=0.05):
    rng = np.random.default_rng(seed)
    X = rng.uniform(-1, 1, (n, 3))
    return X, truth(X) + noise * rng.standard_normal(n)


X_TEST = np.random.default_rng(99).uniform(-1, 1, (300, 3))


def quick():
    """A GP, a linear model and a constant: clearly ordered on a smooth target."""
    return {"gp": MultiFidelityGPRegressor(n_restarts_optimizer=0),
            "linear": LinearRegression(), "mean": DummyRegressor()}


@parametrize_with_checks([TransferRegressor(candidates=quick(), cv=2, random_state=0)])
def test_sklearn_contract(estimator, check):
    check(estimator)


def test_select_refits_the_candidate_with_the_smallest_out_of_fold_error():
    X, y = draw(40, 0)
    auto = TransferRegressor(candidates=quick(), strategy="select", cv=4,
                             random_state=3).fit(X, y)
    folds = KFold(4, shuffle=True, random_state=3)
    for name, candidate in quick().items():
        candidate = clone(candidate)
        if "random_state" in candidate.get_params():
            candidate.set_params(random_state=3)
        oof = cross_val_predict(candidate, X, y, cv=folds)
        np.testing.assert_allclose(auto.oof_predictions_[name], oof, rtol=1e-10)
        assert auto.cv_results_[name]["rmse"] == pytest.approx(np.sqrt(np.mean((oof - y) ** 2)))
    assert auto.chosen_ == "gp" and auto.weights_ == {"gp": 1.0, "linear": 0.0, "mean": 0.0}
    assert list(auto.estimators_) == ["gp"]
    alone = MultiFidelityGPRegressor(n_restarts_optimizer=0, random_state=3).fit(X, y)
    np.testing.assert_array_equal(auto.predict(X_TEST), alone.predict(X_TEST))
    mean, std = auto.predict(X_TEST, return_std=True)
    np.testing.assert_array_equal(std, alone.predict(X_TEST, return_std=True)[1])


def test_stack_predicts_the_weighted_sum_of_its_refits():
    X, y = draw(40, 1, noise=0.3)
    candidates = {"gp": MultiFidelityGPRegressor(n_restarts_optimizer=0),
                  "ridge": make_pipeline(FunctionTransformer(lambda X: np.c_[X, X ** 2]),
                                         Ridge(1.0))}
    auto = TransferRegressor(candidates=candidates, strategy="stack", cv=5,
                             random_state=0).fit(X, y)
    w = stack_weights([auto.oof_predictions_[n] for n in candidates], y)
    assert auto.weights_ == pytest.approx(dict(zip(candidates, w)))
    expected = sum(auto.weights_[n] * m.predict(X_TEST) for n, m in auto.estimators_.items())
    np.testing.assert_allclose(auto.predict(X_TEST), expected)
    with pytest.raises(ValueError, match="candidate 'ridge' .* gives no standard deviation"):
        if auto.weights_["ridge"] > 0:
            auto.predict(X_TEST, return_std=True)
        else:  # the stack left the ridge out: make it choose only the ridge
            TransferRegressor(candidates={"ridge": candidates["ridge"]}, cv=2,
                              strategy="select").fit(
                X, y).predict(X_TEST, return_std=True)


def test_stack_weights_minimise_the_squared_error_on_the_simplex():
    rng = np.random.default_rng(0)
    y = rng.standard_normal(300)
    a, b = y + 0.4 * rng.standard_normal(300), y + 0.6 * rng.standard_normal(300)
    w = stack_weights([a, b], y)
    grid = np.linspace(0, 1, 2001)
    errors = [np.mean((g * a + (1 - g) * b - y) ** 2) for g in grid]
    assert w[0] == pytest.approx(grid[int(np.argmin(errors))], abs=1e-3)
    assert stack_weights([y, y + 1.0], y) == pytest.approx([1.0, 0.0], abs=1e-6)


def test_the_base_reaches_the_candidates_and_is_shared(tmp_path):
    X, y = draw(30, 2)
    base = MLPRegressor(hidden_layer_sizes=(16,), max_epochs=5, random_state=0).fit(
        X, truth(X))
    own = LinearRegression().fit(X, truth(X))
    auto = TransferRegressor(base=base, candidates={
        "gp": MultiFidelityGPRegressor(n_restarts_optimizer=0),
        "own": MultiFidelityGPRegressor(base=own, n_restarts_optimizer=0)},
        strategy="stack", cv=3, random_state=0).fit(X, y)
    for name, model in auto.estimators_.items():
        assert model.base is (base if name == "gp" else own)
    assert clone(auto).base is base


def test_default_candidates_adapt_a_base_end_to_end():
    X, y = draw(30, 3)
    frame = pd.DataFrame(X, columns=["a", "b", "c"])
    base = MLPRegressor(hidden_layer_sizes=(16,), max_epochs=20, random_state=0).fit(
        frame, truth(X) + 0.3 * frame["a"])
    small = default_candidates()
    for name in ("finetune", "lora"):
        small[name].set_params(max_steps=100, l2_strengths=[1e-1, 1e-3])
    auto = TransferRegressor(base=base, candidates=small, cv=3, random_state=0).fit(frame, y)
    assert set(auto.cv_results_) == {"gp", "finetune", "lora"}
    assert auto.chosen_ in auto.cv_results_
    assert auto.feature_names_in_.tolist() == ["a", "b", "c"]
    mean, std = auto.predict(frame, return_std=True)  # every default candidate gives one
    assert mean.shape == std.shape == (30,) and (std > 0).all()
    with pytest.raises(ValueError, match="differ from those the base was fitted with"):
        TransferRegressor(base=base, candidates=small, cv=3).fit(frame[["b", "a", "c"]], y)


def test_parallel_folds_give_the_same_choice_and_predictions():
    X, y = draw(30, 4)
    base = MLPRegressor(hidden_layer_sizes=(16,), max_epochs=5, random_state=0).fit(
        X, truth(X))
    candidates = {**quick(), "lora": default_candidates()["lora"].set_params(
        max_steps=50, l2_strengths=[1e-2])}
    fits = [TransferRegressor(base=base, candidates=candidates, cv=3, n_jobs=jobs,
                              random_state=0).fit(X, y) for jobs in (None, 2)]
    # torch fits in worker processes too; another thread count may round otherwise
    assert fits[0].weights_ == pytest.approx(fits[1].weights_, abs=1e-6)
    for name in candidates:
        np.testing.assert_allclose(fits[0].oof_predictions_[name],
                                   fits[1].oof_predictions_[name], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(fits[0].predict(X_TEST), fits[1].predict(X_TEST),
                               rtol=1e-5, atol=1e-6)


def test_grid_search_over_the_strategy():
    X, y = draw(40, 4)
    search = GridSearchCV(TransferRegressor(candidates=quick(), cv=3, random_state=0),
                          {"strategy": ["select", "stack"]}, cv=2).fit(X, y)
    assert search.best_estimator_.chosen_ == "gp"
    assert search.best_estimator_.weights_["gp"] > 0.8


def test_bad_input_is_named():
    X, y = draw(30, 5)
    with pytest.raises(ValueError, match="n_samples=7"):
        TransferRegressor(candidates=quick(), cv=4).fit(X[:7], y[:7])
    with pytest.raises(ValueError, match="candidates is empty"):
        TransferRegressor(candidates={}).fit(X, y)
    with pytest.raises(TypeError, match="candidate 'x' is not an estimator"):
        TransferRegressor(candidates={"x": object()}).fit(X, y)
    with pytest.raises(ValueError, match="candidate 'gp' failed on a fold: bounds"):
        TransferRegressor(candidates={"gp": MultiFidelityGPRegressor(bounds=[[0, 1]])}).fit(
            X, y)
    with pytest.raises(ValueError, match="NaN"):
        TransferRegressor(candidates=quick()).fit(np.where(X > 0.9, np.nan, X), y)
