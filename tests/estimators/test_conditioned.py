"""The description-as-input estimator: zero-shot and few-shot use, the bases it takes,
scikit-learn's contract on DataFrames, save/load, and bad input."""

import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.frozen import FrozenEstimator
from sklearn.model_selection import GridSearchCV, GroupKFold

import qlsk
from qlsk import ConditionedLoraRegressor
from tests.helpers import without_param

TINY = {"max_epochs": 8, "batch_size": 16, "text_encoder": "lexical", "random_state": 0}


@pytest.fixture(scope="module")
def base(fam_base):
    return fam_base


@pytest.fixture(scope="module")
def model(fam, base):
    return ConditionedLoraRegressor(base=base, **TINY).fit(fam.X_train, fam.y_train)


def test_the_description_moves_the_prediction_and_training_starts_at_the_base(fam, base,
                                                                            model):
    X = fam.X_heldout
    right = model.predict(X)
    other = X.assign(description="a description of some other task entirely")
    with pytest.warns(qlsk.UnfamiliarDescriptionWarning, match="other task entirely"):
        elsewhere = model.predict(other)
    assert right.shape == (len(X),) and not np.allclose(right, elsewhere)
    untrained = ConditionedLoraRegressor(base=base, **{**TINY, "max_epochs": 1, "lr": 1e-12}).fit(
        fam.X_train, fam.y_train)
    inputs = X.drop(columns="description")
    np.testing.assert_allclose(untrained.predict(X), base.predict(inputs.to_numpy()), rtol=1e-5,
                               atol=1e-6)
    assert model.descriptions_ == sorted(set(fam.X_train.description))
    assert model.feature_columns_ == list(inputs.columns)
    lora = sum(p.numel() for n, p in model.module_.named_parameters() if "lora" in n)
    maps = sum(p.numel() for n, p in model.module_.named_parameters()
               if n.startswith("condition"))
    assert model.n_trainable_params_ == lora + maps


@pytest.mark.parametrize("condition", ["shift", "film"])
def test_each_condition_starts_at_the_base_and_film_adds_a_scale(fam, base, condition):
    untrained = ConditionedLoraRegressor(base=base, condition=condition, **{
        **TINY, "max_epochs": 1, "lr": 1e-12}).fit(fam.X_train, fam.y_train)
    inputs = fam.X_heldout.drop(columns="description").to_numpy()
    np.testing.assert_allclose(untrained.predict(fam.X_heldout), base.predict(inputs),
                               rtol=1e-5, atol=1e-6)
    module = untrained.module_
    assert module.film == (condition == "film")
    width = module.condition.weight.shape[0]
    lora = sum(p.numel() for n, p in module.named_parameters() if "lora" in n)
    assert untrained.n_trainable_params_ == lora + width * untrained.embedding_dim_ * (
        2 if condition == "film" else 1)


def test_film_trains_its_scale_saves_loads_and_freezes(fam, base, tmp_path):
    film = ConditionedLoraRegressor(base=base, condition="film", **TINY).fit(
        fam.X_train, fam.y_train)
    shift = ConditionedLoraRegressor(base=base, condition="shift", **TINY).fit(
        fam.X_train, fam.y_train)
    assert film.module_.condition_scale.weight.abs().sum() > 0
    pred = film.predict(fam.X_heldout)
    assert not np.allclose(pred, shift.predict(fam.X_heldout))
    qlsk.save(film, tmp_path / "film.qlsk")
    np.testing.assert_array_equal(qlsk.load(tmp_path / "film.qlsk").predict(fam.X_heldout),
                                  pred)
    few = ConditionedLoraRegressor(init=film, freeze_condition=True, max_steps=50,
                                   random_state=0).fit(fam.X_heldout[:8], fam.y_heldout[:8])
    np.testing.assert_array_equal(few.module_.condition_scale.weight.detach(),
                                  film.module_.condition_scale.weight.detach())


def test_a_file_saved_before_condition_existed_loads_as_a_shift(fam, base, tmp_path):
    shift = ConditionedLoraRegressor(base=base, condition="shift", **TINY).fit(
        fam.X_train, fam.y_train)
    qlsk.save(shift, tmp_path / "shift.qlsk")
    loaded = qlsk.load(without_param(tmp_path / "shift.qlsk", "condition",
                                     tmp_path / "old.qlsk"))
    assert loaded.condition == "shift"
    np.testing.assert_array_equal(loaded.predict(fam.X_heldout), shift.predict(fam.X_heldout))


def test_same_seed_same_predictions_and_few_shot_from_a_fitted_model(fam, base, model):
    again = ConditionedLoraRegressor(base=base, **TINY).fit(fam.X_train, fam.y_train)
    np.testing.assert_array_equal(again.predict(fam.X_heldout), model.predict(fam.X_heldout))
    rows = fam.X_heldout.iloc[:8]
    few = ConditionedLoraRegressor(init=model, freeze_condition=True, max_epochs=3,
                                   regularization="fixed", random_state=0).fit(
        rows, fam.y_heldout[:8])  # the fixed recipe from init: max_epochs of AdamW
    assert len(few.history_) == 3 and not hasattr(few, "posterior_")
    np.testing.assert_array_equal(few.module_.condition.weight.detach(),
                                  model.module_.condition.weight.detach())
    assert few.n_trainable_params_ < model.n_trainable_params_


def test_bases_it_takes(fam, base, model, tmp_path):
    X, y = fam.X_train, fam.y_train
    frozen = ConditionedLoraRegressor(base=FrozenEstimator(base), **TINY).fit(X, y)
    np.testing.assert_allclose(frozen.predict(X), model.predict(X), rtol=1e-6)
    qlsk.save(base, tmp_path / "base.qlsk")
    from_path = ConditionedLoraRegressor(base=str(tmp_path / "base.qlsk"), **TINY).fit(X, y)
    np.testing.assert_allclose(from_path.predict(X), model.predict(X), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match=r"fitted base \(base=...\) or a fitted model"):
        ConditionedLoraRegressor(**TINY).fit(X, y)
    with pytest.raises(TypeError, match="init must be a fitted ConditionedLoraRegressor"):
        ConditionedLoraRegressor(init=base, **TINY).fit(X, y)
    with pytest.raises(ValueError, match="base network expects 3"):
        ConditionedLoraRegressor(base=base, **TINY).fit(X.assign(x4=0.0), y)


def test_clone_and_a_search_scored_by_task(fam, base):
    est = ConditionedLoraRegressor(base=base, **{**TINY, "max_epochs": 2})
    assert clone(est).base is base and clone(est).get_params()["rank"] == 4
    groups = fam.X_train.description.factorize()[0]
    search = GridSearchCV(est, {"rank": [1, 2]}, cv=GroupKFold(2)).fit(
        fam.X_train, fam.y_train, groups=groups)
    assert search.best_params_["rank"] in (1, 2) and search.best_estimator_.base is base


def test_save_and_load_give_the_same_predictions(fam, model, tmp_path):
    path = tmp_path / "conditioned.qlsk"
    qlsk.save(model, path)
    loaded = qlsk.load(path)
    assert isinstance(loaded, ConditionedLoraRegressor)
    np.testing.assert_array_equal(loaded.predict(fam.X_heldout), model.predict(fam.X_heldout))
    assert loaded.descriptions_ == model.descriptions_ and loaded.text_encoder == "lexical"
    with pytest.raises(FileExistsError):
        qlsk.save(model, path)
    few = ConditionedLoraRegressor(init=model, max_steps=50, random_state=0).fit(
        fam.X_heldout.iloc[:8], fam.y_heldout[:8])
    with pytest.raises(TypeError, match="init"):
        qlsk.save(few, tmp_path / "few.qlsk")
    assert not (tmp_path / "few.qlsk").exists()
    custom = ConditionedLoraRegressor(base=model.base, **{**TINY, "max_epochs": 1,
                                                          "text_encoder": lambda t: np.ones(3)})
    custom.fit(fam.X_train, fam.y_train)
    with pytest.raises(TypeError, match="text_encoder"):
        qlsk.save(custom, tmp_path / "custom.qlsk")


def test_bad_input_names_the_problem(fam, model):
    X = fam.X_heldout
    with pytest.raises(ValueError, match="no description column 'description'"):
        model.predict(X.drop(columns="description"))
    with pytest.raises(ValueError, match="non-empty string"):
        model.predict(X.assign(description=""))
    with pytest.raises(TypeError, match="pandas DataFrame"):
        model.predict(X.drop(columns="description").to_numpy())
    with pytest.raises(ValueError, match="missing or infinite"):
        model.predict(X.assign(x1=np.nan))
    reordered = X[["x2", "x1", "x3", "description"]]
    with pytest.raises(ValueError, match="init was fitted on"):
        ConditionedLoraRegressor(init=model, max_epochs=1).fit(reordered, fam.y_heldout)
    with pytest.raises(ValueError, match="rank"):
        ConditionedLoraRegressor(base=model.base, rank=2.5).fit(fam.X_train, fam.y_train)
    # it has no atom memory, so none of the memory's views
    assert not any(hasattr(model, name) for name in ("atom_usage", "save_memory"))


def test_predicting_without_descriptions(fam, model):
    X = fam.X_heldout
    blind = model.predict(X, use_description=False)
    np.testing.assert_array_equal(blind, model.predict(X.drop(columns="description"),
                                                       use_description=False))
    np.testing.assert_array_equal(blind, model.predict(X.assign(description="other words"),
                                                       use_description=False))
    assert not np.allclose(blind, model.predict(X))
    # no description: the map V adds nothing, so the adapted network alone predicts
    inputs = torch.tensor(X.drop(columns="description").to_numpy(np.float32))
    with torch.no_grad():
        alone = model.module_.adapted.eval()(inputs).numpy().ravel()
    np.testing.assert_allclose(blind, alone, rtol=1e-5, atol=1e-6)


def test_few_shot_from_init_takes_the_evidence_gives_intervals_and_saves_it(fam, base,
                                                                             model, tmp_path):
    rows, y = fam.X_heldout.iloc[:12], fam.y_heldout[:12]
    # regularization="auto" (the default): the evidence from init, the fixed recipe from
    # a base (as `model` was fitted)
    few = ConditionedLoraRegressor(init=model, freeze_condition=True, max_steps=200,
                                   random_state=0).fit(rows, y)
    assert few.l2_strength_ in [p["strength"] for p in few.regularization_path_]
    mean, std = few.predict(fam.X_heldout, return_std=True)
    np.testing.assert_array_equal(mean, few.predict(fam.X_heldout))
    assert mean.shape == std.shape == (len(fam.X_heldout),) and np.all(std > 0)
    # the noise is a floor of the spread: a new observation is at least that uncertain
    assert np.all(std >= few.noise_std_[0] - 1e-6)
    # the map V stays frozen; the L2 prior pulls toward init's weights, not toward zero
    np.testing.assert_array_equal(few.module_.condition.weight.detach(),
                                  model.module_.condition.weight.detach())
    assert not np.allclose(few.predict(fam.X_heldout, use_description=False),
                           few.predict(fam.X_heldout))
    with pytest.raises(ValueError, match="needs the rows' descriptions"):
        few.predict(fam.X_heldout, return_std=True, use_description=False)
    with pytest.raises(ValueError, match=r"regularization='auto' \(here 'fixed'\)"):
        model.predict(fam.X_heldout, return_std=True)  # the multi-task recipe: no posterior
    with pytest.raises(ValueError, match=r"'auto' \(here 'evidence'\) needs at least 2"):
        ConditionedLoraRegressor(init=model).fit(rows.iloc[:1], y[:1])
    # a model pickled before the parameter existed trained with the fixed recipe
    old = clone(model)
    del old.__dict__["regularization"]
    assert old.get_params()["regularization"] == "fixed" and old._regime() == "fixed"
    # fitted from a base under the evidence, qlsk.save keeps the posterior exactly
    fitted = ConditionedLoraRegressor(base=base, regularization="evidence", max_steps=100,
                                      text_encoder="lexical", random_state=0)
    fitted.fit(fam.X_train, fam.y_train)
    qlsk.save(fitted, tmp_path / "evidence.qlsk")
    loaded = qlsk.load(tmp_path / "evidence.qlsk")
    for a, b in zip(loaded.predict(fam.X_heldout, return_std=True),
                    fitted.predict(fam.X_heldout, return_std=True)):
        np.testing.assert_array_equal(a, b)
    assert loaded.l2_strength_ == fitted.l2_strength_


def test_a_pruner_is_refused_where_auto_means_the_evidence(fam, model):
    # adapting from `init`, "auto" trains under the evidence: no epochs to prune
    from qlsk.tuning import tune

    few = ConditionedLoraRegressor(init=model, max_steps=20, random_state=0)
    rows, y = fam.X_heldout.iloc[:8], fam.y_heldout[:8]
    with pytest.raises(ValueError, match=r"regularization='auto' \(here 'evidence'\)"):
        tune(few, rows, y, n_trials=1, pruner="median")
    with pytest.raises(ValueError, match=r"regularization='evidence'"):
        tune(few.set_params(regularization="evidence"), rows, y, n_trials=1,
             pruner="median")
