"""GPDiscrepancyRegressor: a GP head fitted on cross-fitted residuals."""

import warnings

import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone
from sklearn.exceptions import ConvergenceWarning, NotFittedError
from sklearn.gaussian_process.kernels import RBF, WhiteKernel
from sklearn.linear_model import LinearRegression, Ridge
from sklearn.model_selection import GridSearchCV, KFold, ShuffleSplit, cross_val_predict
from sklearn.neighbors import KNeighborsRegressor
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer
from sklearn.utils.estimator_checks import parametrize_with_checks

import qlsk
from qlsk import LoraRegressor, MLPRegressor
from qlsk.estimators.discrepancy import GPDiscrepancyRegressor

pytestmark = [pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning"),
              pytest.mark.usefixtures("one_blas_thread")]


def source(X):
    return np.sin(2 * X[:, 0]) + X[:, 1] ** 2 + 0.5 * X[:, 2]


def shifted(X):
    """The source plus a smooth discrepancy."""
    return source(X) + 0.6 * np.cos(3 * X[:, 0])


def draw(n, seed, truth, noise=0.1):
    rng = np.random.default_rng(seed)
    X = rng.uniform(-1, 1, (n, 3))
    return X, truth(X) + noise * rng.standard_normal(n)


X_TEST = np.random.default_rng(99).uniform(-1, 1, (1000, 3))


def rmse(model, truth):
    return np.sqrt(np.mean((model.predict(X_TEST) - truth(X_TEST)) ** 2))


@pytest.fixture(scope="module")
def base():
    X = np.random.default_rng(0).uniform(-1, 1, (300, 3))
    return MLPRegressor(hidden_layer_sizes=(32, 32), max_epochs=30, batch_size=64,
                        random_state=0).fit(X, source(X))


def lora(base, **kw):
    # the fixed recipe's short budget: an adapter that leaves a discrepancy for the head
    return LoraRegressor(base=base, **{"rank": 2, "max_epochs": 30, "batch_size": 32,
                                       "regularization": "fixed", "random_state": 0, **kw})


# A fixed kernel keeps scikit-learn's ~50 checks fast; the fitted kernel is tested below.
@parametrize_with_checks([GPDiscrepancyRegressor(
    Ridge(), kernel=RBF(1.0, "fixed") + WhiteKernel(0.1, "fixed"), cv=2, random_state=0)])
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)


@pytest.mark.parametrize("refit", [True, False])
def test_head_learns_a_smooth_discrepancy_the_adapter_misses(base, refit):
    X, y = draw(60, 1, shifted)
    alone = rmse(lora(base).fit(X, y), shifted)
    head = GPDiscrepancyRegressor(lora(base), refit=refit, random_state=0).fit(X, y)
    assert head.discrepancy_kept_
    assert rmse(head, shifted) < 0.75 * alone
    assert len(head.estimators_) == 5 and hasattr(head, "estimator_") == refit


def test_head_on_pure_noise_residuals_costs_almost_nothing():
    # A correct linear model leaves only noise: the head must find nothing to add.
    w = np.array([1.0, -2.0, 0.5])

    def truth(X):
        return X @ w

    ratios = []
    for seed in range(5):
        X, y = draw(50, seed, truth, noise=0.3)
        head = GPDiscrepancyRegressor(LinearRegression(), random_state=seed).fit(X, y)
        assert not head.discrepancy_kept_
        ratios.append(rmse(head, truth) / rmse(LinearRegression().fit(X, y), truth))
    assert np.mean(ratios) < 1.03 and max(ratios) < 1.06
    # Without the BIC check, ML-II finds spurious short length scales in the noise.
    X, y = draw(50, 0, truth, noise=0.3)
    unchecked = GPDiscrepancyRegressor(LinearRegression(), bic_select=False,
                                       random_state=0).fit(X, y)
    assert rmse(unchecked, truth) > 1.5 * rmse(LinearRegression().fit(X, y), truth)


def test_nothing_left_to_learn_gives_exactly_the_adapters_predictions(base):
    X, y = draw(60, 2, base.predict, noise=0.05)
    alone = lora(base).fit(X, y)
    head = GPDiscrepancyRegressor(lora(base), cv=3, random_state=0).fit(X, y)
    assert not head.discrepancy_kept_
    np.testing.assert_allclose(head.predict(X_TEST), alone.predict(X_TEST), rtol=1e-6)


def test_residuals_are_out_of_fold():
    # A 1-nearest-neighbour model has zero in-sample residuals; out of fold it does not.
    X, y = draw(30, 3, shifted)
    head = GPDiscrepancyRegressor(KNeighborsRegressor(1), cv=3, random_state=0).fit(X, y)
    assert np.abs(head.residuals_).min() > 0
    folds = KFold(3, shuffle=True, random_state=np.random.RandomState(0).randint(2**31 - 1))
    np.testing.assert_allclose(head.residuals_,
                               y - cross_val_predict(KNeighborsRegressor(1), X, y, cv=folds))


def test_prediction_is_the_refit_or_the_fold_mean_plus_delta():
    X, y = draw(40, 4, shifted)
    head = GPDiscrepancyRegressor(Ridge(), random_state=0).fit(X, y)
    assert head.discrepancy_kept_
    ridge = Ridge().fit(X, y)
    delta = head.gp_.predict(X_TEST) * head.residual_scale_
    np.testing.assert_allclose(head.predict(X_TEST), ridge.predict(X_TEST) + delta)
    head.set_params(refit=False).fit(X, y)
    assert not hasattr(head, "estimator_")
    fold_mean = np.mean([m.predict(X_TEST) for m in head.estimators_], axis=0)
    np.testing.assert_allclose(head.predict(X_TEST), fold_mean + delta)


def test_clone_pipeline_and_grid_search_over_the_inner_rank(base):
    X, y = draw(40, 5, shifted)
    model = GPDiscrepancyRegressor(lora(base, max_epochs=3), cv=2, n_restarts_optimizer=0,
                                   random_state=0)
    copy = clone(model)
    assert copy.get_params()["estimator__rank"] == 2 and copy.estimator.base is base
    search = GridSearchCV(make_pipeline(FunctionTransformer(), model),
                          {"gpdiscrepancyregressor__estimator__rank": [1, 2]}, cv=2).fit(X, y)
    assert search.best_params_["gpdiscrepancyregressor__estimator__rank"] in (1, 2)
    assert all(m.base is base for m in search.best_estimator_[-1].estimators_)
    assert search.predict(X_TEST[:4]).shape == (4,)


def test_same_random_state_same_predictions(base):
    X, y = draw(30, 6, shifted)
    a = GPDiscrepancyRegressor(lora(base, max_epochs=5), cv=3, random_state=1).fit(X, y)
    b = GPDiscrepancyRegressor(lora(base, max_epochs=5), cv=3, random_state=1).fit(X, y)
    np.testing.assert_array_equal(a.predict(X_TEST), b.predict(X_TEST))


def test_multi_output_and_predictive_std():
    X, y1 = draw(40, 7, shifted)
    y = np.column_stack([y1, -2 * y1])
    head = GPDiscrepancyRegressor(Ridge(), cv=4, n_restarts_optimizer=0, random_state=0)
    mean, std = head.fit(X, y).predict(X_TEST[:5], return_std=True)
    assert mean.shape == std.shape == (5, 2) and (std > 0).all()
    mean, std = head.fit(X, y1).predict(X_TEST[:5], return_std=True)
    assert mean.shape == std.shape == (5,)


def test_n_trainable_params_counts_every_predicting_model(base):
    X, y = draw(30, 8, shifted)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        head = GPDiscrepancyRegressor(lora(base, max_epochs=2), cv=3, random_state=0).fit(X, y)
        per_model = head.estimator_.n_trainable_params_
        assert head.n_trainable_params_ == per_model + len(head.gp_[-1].kernel_.theta)
        head.set_params(refit=False).fit(X, y)
    assert head.n_trainable_params_ == 3 * per_model + len(head.gp_[-1].kernel_.theta)


@pytest.mark.parametrize("n, cv, message", [(4, 5, "at least 5 rows"),
                                            (2, 2, "at least 3 rows")])
def test_too_few_rows_for_a_gp_head(n, cv, message):
    X, y = draw(n, 0, shifted)
    with pytest.raises(ValueError, match=message):
        GPDiscrepancyRegressor(Ridge(), cv=cv).fit(X, y)


def test_dataframe_columns_are_checked_by_the_inner_estimator_against_its_base():
    X, y = draw(30, 9, shifted)
    frame = pd.DataFrame(X, columns=["a", "b", "c"])
    df_base = MLPRegressor(hidden_layer_sizes=(8,), max_epochs=2, random_state=0).fit(
        frame, source(X))
    head = GPDiscrepancyRegressor(lora(df_base, max_epochs=2), cv=2, random_state=0)
    with pytest.raises(ValueError, match="differ from those the base"):
        head.fit(frame[["c", "b", "a"]], y)
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message="X has no feature names")
        head.fit(frame, y).predict(frame)


def test_save_says_which_estimators_it_stores_not_that_a_fitted_head_is_unfitted(tmp_path):
    X, y = draw(20, 0, shifted)
    head = GPDiscrepancyRegressor(Ridge(), cv=2, random_state=0).fit(X, y)
    with pytest.raises(TypeError, match="single-task networks.*keep a GPDiscrepancyRegressor "
                                        "with pickle"):
        qlsk.save(head, tmp_path / "head.qlsk")
    assert not (tmp_path / "head.qlsk").exists()


def test_bad_input():
    X, y = draw(20, 0, shifted)
    model = GPDiscrepancyRegressor(Ridge(), cv=2)
    with pytest.raises(NotFittedError):
        model.predict(X)
    X_nan = X.copy()
    X_nan[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        model.fit(X_nan, y)
    with pytest.raises(ValueError, match="exactly one test fold"):
        GPDiscrepancyRegressor(Ridge(), cv=ShuffleSplit(3, random_state=0)).fit(X, y)
    model.fit(X, y)
    with pytest.raises(ValueError, match="features"):
        model.predict(X[:, :2])
