"""One atom memory shared by many described tasks: torch parts and estimators."""

import copy
import pickle
import warnings

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.base import clone
from sklearn.compose import ColumnTransformer
from sklearn.exceptions import NotFittedError
from sklearn.model_selection import GridSearchCV, GroupKFold, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

import qlsk
from qlsk import FewShotRegressor, MLPRegressor, SharedMemoryRegressor
from qlsk.adapters import instruction_prior
from qlsk.adapters.prior_map import PriorMap
from qlsk.estimators._described import _TaskBatches
from qlsk.estimators._net import _Batches
from qlsk.text import embed

TINY = {"max_epochs": 2, "batch_size": 16, "random_state": 0}
# few-shot under its default regime (the evidence), on a short path
FEW_SHOT = {**TINY, "max_steps": 100, "l2_strengths": [1e-1, 1e-3]}


@pytest.fixture(scope="module")
def base(fam_base):
    return fam_base


@pytest.fixture(scope="module")
def shared(fam, base):
    return SharedMemoryRegressor(base=base, **TINY).fit(fam.X_train, fam.y_train)


def _memory(model):
    return {k: v.clone() for k, v in model.shared_model_.memory.state_dict().items()}


def test_fixed_prior_map_is_the_seeded_instruction_prior():
    e = embed("a strong interaction between x1 and x3")
    prior = PriorMap(e.size, 8, temperature=0.5, learned=False)
    got = prior(torch.as_tensor(e, dtype=torch.float32))
    torch.testing.assert_close(got, instruction_prior(e, 8, 0.5), atol=1e-5, rtol=1e-5)
    assert not list(prior.parameters())


def test_training_batches_hold_one_task_each():
    X = torch.cat([torch.randn(50, 3), torch.tensor([0.0] * 20 + [1.0] * 17 + [2.0] * 13)[:, None]],
                  dim=1)
    batches = _Batches(type("D", (), {"X": X, "y": torch.randn(50, 1)})(), 8, True,
                       torch.Generator().manual_seed(0))
    seen = []
    for xb, _ in _TaskBatches(batches):
        assert xb[:, -1].unique().numel() == 1
        seen.append(len(xb))
    assert sum(seen) == 50 and len(seen) == len(_TaskBatches(batches)) == 3 + 3 + 2


def test_fit_predict_zero_shot_and_atom_usage(fam, shared):
    X = fam.test_frame[[*fam.feature_names, "description"]]
    y = shared.predict(X)
    assert y.shape == (len(X),) and np.isfinite(y).all()
    assert shared.descriptions_ == sorted(fam.X_train.description.unique())
    # mixed tasks in one call equal one task at a time
    one = np.concatenate([shared.predict(rows) for _, rows in X.groupby("description",
                                                                       sort=False)])
    order = np.concatenate([idx for _, idx in X.groupby("description",
                                                        sort=False).indices.items()])
    np.testing.assert_allclose(one, y[order], rtol=1e-5, atol=1e-6)
    # the description changes the prediction (zero-shot on a held-out text too)
    other = X.assign(description="Ishigami function with a strong squared-sine term in x2.")
    assert not np.allclose(shared.predict(other), y)
    usage = shared.atom_usage(X.iloc[:6])
    assert usage.shape == (3, 6, 8)  # 3 adapted layers, block_size=1
    np.testing.assert_allclose(usage.sum(-1), 1, atol=1e-6)
    assert ((usage > 0).sum(-1) == 2).all()


def test_learned_prior_map_trains_and_fixed_does_not(fam, base, shared):
    start = PriorMap(shared.embedding_dim_, 8).weight
    assert not torch.allclose(shared.shared_model_.prior_map.weight, start)
    fixed = SharedMemoryRegressor(base=base, prior_map="fixed", **TINY).fit(
        fam.X_train, fam.y_train)
    torch.testing.assert_close(fixed.shared_model_.prior_map.weight, start)
    assert fixed.n_trainable_params_ == shared.n_trainable_params_ - start.numel()


def test_fitted_model_copies_and_pickles(fam, shared):
    X = fam.X_heldout[:5]
    for other in (copy.deepcopy(shared), pickle.loads(pickle.dumps(shared))):
        np.testing.assert_allclose(other.predict(X), shared.predict(X))
    assert clone(shared).base is shared.base


def test_pipeline_groupkfold_and_grid_search(fam):
    features = fam.feature_names
    scale = ColumnTransformer([("scale", StandardScaler(), features)], remainder="passthrough",
                              verbose_feature_names_out=False).set_output(transform="pandas")
    model = SharedMemoryRegressor(hidden_layer_sizes=(8,), max_epochs=1, batch_size=32,
                                  random_state=0)
    pipe = make_pipeline(scale, model)
    scores = cross_val_score(pipe, fam.X_train, fam.y_train, groups=fam.groups_train,
                             cv=GroupKFold(2))
    assert np.isfinite(scores).all()
    search = GridSearchCV(model, {"prior_map": ["learned", "fixed"]}, cv=GroupKFold(2))
    search.fit(fam.X_train, fam.y_train, groups=fam.groups_train)
    assert search.best_params_["prior_map"] in ("learned", "fixed")


def test_save_memory_and_reuse_it(fam, base, shared, tmp_path):
    path = tmp_path / "memory.safetensors"
    shared.save_memory(path)
    with pytest.raises(FileExistsError):
        shared.save_memory(path)
    frozen = SharedMemoryRegressor(base=base, memory=path, freeze_memory=True, **TINY).fit(
        fam.X_heldout, fam.y_heldout)
    saved = _memory(shared)
    for key, value in _memory(frozen).items():
        torch.testing.assert_close(value, saved[key])
    torch.testing.assert_close(frozen.shared_model_.prior_map.weight,
                               shared.shared_model_.prior_map.weight)
    trained = SharedMemoryRegressor(base=base, memory=path, **TINY).fit(
        fam.X_heldout, fam.y_heldout)
    assert not torch.allclose(_memory(trained)["atom_deltas"], saved["atom_deltas"])
    for wrong, match in (({"rank": 2}, "rank=4"), ({"n_atoms": 4}, "n_atoms=8"),
                         ({"block_size": 3}, "n_blocks=3")):
        with pytest.raises(ValueError, match=match):
            SharedMemoryRegressor(base=base, memory=path, **wrong, **TINY).fit(
                fam.X_train, fam.y_train)
    (tmp_path / "x").write_bytes(b"not safetensors")
    with pytest.raises(ValueError, match="not a memory saved by qlsk"):
        SharedMemoryRegressor(base=base, memory=tmp_path / "x", **TINY).fit(
            fam.X_train, fam.y_train)


def test_few_shot_starts_from_the_shared_model(fam, shared):
    rows, y = fam.X_heldout[:10], fam.y_heldout[:10]
    before = _memory(shared)
    prediction = shared.predict(rows)
    few = FewShotRegressor(shared, **FEW_SHOT).fit(rows, y)
    assert few.n_trainable_params_ < shared.n_trainable_params_
    for key, value in _memory(few).items():  # memory frozen by default
        torch.testing.assert_close(value, before[key])
    np.testing.assert_allclose(shared.predict(rows), prediction)  # shared untouched
    assert not np.allclose(few.predict(rows), prediction)
    assert clone(few).shared is shared
    free = FewShotRegressor(shared, freeze_memory=False, **FEW_SHOT).fit(rows, y)
    assert not torch.allclose(_memory(free)["atom_deltas"], before["atom_deltas"])
    with pytest.raises(ValueError, match="the shared model was fitted on 3"):
        FewShotRegressor(shared, **TINY).fit(rows.assign(x4=1.0), y)
    with pytest.raises(TypeError, match="fitted SharedMemoryRegressor"):
        FewShotRegressor(None).fit(rows, y)


def test_few_shot_without_descriptions_ignores_what_they_say(fam, shared):
    rows, y = fam.X_heldout[:10], fam.y_heldout[:10]
    other = rows.assign(description="an unrelated sentence about something else")
    blind = [FewShotRegressor(shared, regularization="fixed", **TINY).fit(
        X, y, use_description=False) for X in (rows, other)]
    # trained and asked without a description, the text given is never read
    np.testing.assert_array_equal(blind[0].predict(rows, use_description=False),
                                  blind[1].predict(other, use_description=False))
    described = FewShotRegressor(shared, regularization="fixed", **TINY).fit(rows, y)
    assert not np.allclose(described.predict(rows), blind[0].predict(rows,
                                                                      use_description=False))
    # the switch lasts one fit: the next fit reads the descriptions again
    again = blind[0].fit(rows, y)
    np.testing.assert_array_equal(again.predict(rows), described.predict(rows))
    with pytest.raises(ValueError, match="needs regularization='fixed'"):
        FewShotRegressor(shared, **TINY).fit(rows, y, use_description=False)


def test_few_shot_under_the_evidence_shrinks_toward_the_shared_model(fam, shared):
    rows, y = fam.X_heldout[:12], fam.y_heldout[:12]
    moved = {}
    for strength in (1e6, 1e-4):
        fit = FewShotRegressor(shared, regularization="evidence", l2_strengths=[strength],
                               max_steps=300, random_state=0).fit(rows, y)
        moved[strength] = np.abs(fit.predict(rows) - shared.predict(rows)).max()
    # a strong prior keeps (nearly) the shared model's zero-shot predictions
    assert moved[1e6] < 0.05 * moved[1e-4]
    few = FewShotRegressor(shared, regularization="evidence", max_steps=200,
                           random_state=0).fit(rows, y)
    assert few.l2_strength_ in [p["strength"] for p in few.regularization_path_]
    mean, std = few.predict(rows, return_std=True)
    np.testing.assert_allclose(mean, few.predict(rows))
    assert mean.shape == std.shape == (12,) and (std > 0).all()
    assert few.predict(rows, use_description=False).shape == (12,)
    with pytest.raises(ValueError, match="needs the rows' descriptions"):
        few.predict(rows, return_std=True, use_description=False)
    fixed = FewShotRegressor(shared, regularization="fixed", **TINY).fit(rows, y)
    with pytest.raises(ValueError, match="return_std=True needs the posterior"):
        fixed.predict(rows, return_std=True)
    with pytest.raises(ValueError, match="at least 2 samples"):
        FewShotRegressor(shared, regularization="evidence").fit(rows[:1], y[:1])


def test_few_shot_models_save_and_load_with_their_shared_model(fam, shared, tmp_path):
    rows, y = fam.X_heldout[:12], fam.y_heldout[:12]
    for regularization in ("fixed", "evidence"):
        few = FewShotRegressor(shared, regularization=regularization, max_steps=50,
                               **TINY).fit(rows, y)
        path = tmp_path / f"{regularization}.qlsk"
        qlsk.save(few, path)
        loaded = qlsk.load(path)
        assert isinstance(loaded.shared, SharedMemoryRegressor) and loaded.shared is not shared
        np.testing.assert_array_equal(loaded.predict(fam.X_heldout), few.predict(fam.X_heldout))
        np.testing.assert_array_equal(loaded.shared.predict(fam.X_heldout),
                                      shared.predict(fam.X_heldout))
        assert loaded.n_trainable_params_ == few.n_trainable_params_
    np.testing.assert_allclose(loaded.predict(rows, return_std=True)[1],
                               few.predict(rows, return_std=True)[1], rtol=1e-6)
    loaded.fit(rows, y)  # refits from the stored shared model


def test_clear_errors(fam, shared, base):
    X, y = fam.X_train, fam.y_train
    with pytest.raises(ValueError, match=r"no description column 'description'"):
        shared.predict(X.drop(columns="description"))
    with pytest.raises(ValueError, match="has 4 input column"):
        shared.predict(X.assign(x4=0.0))
    with pytest.raises(ValueError, match="fitted on 3"):
        shared.predict(X.drop(columns="x3"))
    for bad in ("", "   ", 3.0, None):
        with pytest.raises(ValueError, match="non-empty string"):
            shared.predict(X.iloc[:3].assign(description=bad))
    with pytest.raises(TypeError, match="pandas DataFrame"):
        shared.predict(X.to_numpy())
    gap = X.copy()
    gap.loc[gap.index[-1], "x3"] = np.nan  # a task that lacks one input
    with pytest.raises(ValueError, match="has a missing or infinite value in column 'x3'"):
        SharedMemoryRegressor(base=base, **TINY).fit(gap, y)
    with pytest.raises(ValueError, match="X has 4 features, but the base network expects 3"):
        SharedMemoryRegressor(base=base, **TINY).fit(X.assign(x4=0.0), y)
    with pytest.raises(ValueError, match="top_k=3 exceeds n_atoms=2"):
        SharedMemoryRegressor(base=base, n_atoms=2, top_k=3).fit(X, y)
    assert not hasattr(SharedMemoryRegressor(base=base, n_atoms=2, top_k=3), "net_")


def test_continual_stages_carry_grow_and_freeze_the_memory(fam, base):
    first, second = fam.train_members[:4], fam.train_members[4:]
    rows = {name: np.isin(fam.groups_train, members)
            for name, members in (("first", first), ("second", second))}
    model = SharedMemoryRegressor(base=base, warm_start=True, **TINY)
    model.fit(fam.X_train[rows["first"]], fam.y_train[rows["first"]])
    assert len(model.stages_) == 1
    before = _memory(model)
    model.set_params(grow_atoms=4, freeze_previous_atoms=True)
    model.fit(fam.X_train[rows["second"]], fam.y_train[rows["second"]])
    after = _memory(model)
    assert after["atom_deltas"].shape[0] == 12 and model.stages_[1]["n_atoms"] == 12
    torch.testing.assert_close(after["atom_deltas"][:8], before["atom_deltas"])
    assert not torch.allclose(after["atom_deltas"][8:], torch.zeros(4, 4, 4))
    assert model.shared_model_.prior_map.weight.shape[0] == 12
    assert set(model.descriptions_) == set(fam.X_train.description)
    assert model.base_ is base
    drift = model.route_drift()
    assert len(drift) == 8 and drift.drift.between(0, 1).all()
    assert drift[drift.stage == 0].drift.gt(0).any()  # the second stage moved the router
    assert model.predict(fam.X_heldout[:3]).shape == (3,)
    model.set_params(warm_start=False)
    model.fit(fam.X_train[rows["first"]], fam.y_train[rows["first"]])
    assert len(model.stages_) == 1 and _memory(model)["atom_deltas"].shape[0] == 8


def test_a_failed_stage_leaves_the_earlier_stages_intact(fam, base):
    model = SharedMemoryRegressor(base=base, warm_start=True, **TINY)
    model.fit(fam.X_train, fam.y_train)
    expected, stages = model.predict(fam.X_heldout[:20]), model.stages_
    bad = fam.X_train.copy()
    bad.iloc[0, 0] = np.nan
    with pytest.raises(ValueError):
        model.fit(bad, fam.y_train)
    assert model.stages_ is stages and len(model.stages_) == 1
    np.testing.assert_array_equal(model.predict(fam.X_heldout[:20]), expected)


def test_columns_must_match_the_bases_names_and_order(fam):
    names = list(fam.feature_names)
    source = pd.DataFrame(np.asarray(fam.X_source), columns=names)
    named_base = MLPRegressor((8,), max_epochs=1, random_state=0).fit(source, fam.y_source)
    swapped = fam.X_train[[names[1], names[0], *names[2:], "description"]]
    with pytest.raises(ValueError, match="another order"):
        SharedMemoryRegressor(base=named_base, **TINY).fit(swapped, fam.y_train)


def test_shared_models_parameters_are_not_the_few_shot_estimators(fam, base, tmp_path):
    shared = SharedMemoryRegressor(base=base, **TINY).fit(fam.X_train, fam.y_train)
    few = FewShotRegressor(shared)
    assert not any(k.startswith("shared__") for k in few.get_params(deep=True))
    with pytest.raises(ValueError, match="shared= is a fitted object shared"):
        few.set_params(shared__max_epochs=99)
    assert shared.max_epochs == TINY["max_epochs"]
    with pytest.raises(NotFittedError):  # an unfitted one is refused, nothing written
        qlsk.save(few, tmp_path / "never-written.qlsk")
    assert not (tmp_path / "never-written.qlsk").exists()


def test_a_missing_memory_file_fails_before_pretraining(fam, tmp_path):
    model = SharedMemoryRegressor(memory=str(tmp_path / "nope.mem"), max_epochs=10_000)
    with pytest.raises((FileNotFoundError, ValueError)):
        model.fit(fam.X_train, fam.y_train)
    assert not hasattr(model, "base_")
    model.set_params(memory=str(tmp_path))
    with pytest.raises(ValueError, match="is a folder; give the file written by save_memory"):
        model.fit(fam.X_train, fam.y_train)
    assert not hasattr(model, "base_")


def test_a_memory_of_other_parameters_fails_before_pretraining(fam, shared, tmp_path):
    path = tmp_path / "memory.safetensors"
    shared.save_memory(path)  # rank 4, 8 atoms, the lexical encoder
    for wrong, match in (({"rank": 2}, r"rank=4 \(this estimator: 2\)"),
                         ({"n_atoms": 4, "top_k": 2}, r"n_atoms=8 \(this estimator: 4\)"),
                         ({"text_encoder": "semantic"},
                          r"text_encoder='lexical' \(this estimator: 'semantic'\)")):
        model = SharedMemoryRegressor(memory=path, max_epochs=10_000, **wrong)
        with pytest.raises(ValueError, match=match):
            model.fit(fam.X_train, fam.y_train)
        assert not hasattr(model, "base_")  # base=None: nothing was pretrained


def test_grown_atom_count_is_visible_and_reuses_the_saved_memory(fam, base, tmp_path):
    model = SharedMemoryRegressor(base=base, warm_start=True, **TINY)
    model.fit(fam.X_train, fam.y_train)
    assert model.n_atoms_ == model.n_atoms == 8
    model.set_params(grow_atoms=2)
    for expected in (10, 12):  # grow_atoms applies at every warm stage while set
        model.fit(fam.X_train, fam.y_train)
        assert model.n_atoms_ == expected and model.n_atoms == 8
    path = tmp_path / "grown.memory"
    model.save_memory(path)
    with pytest.raises(ValueError, match=r"n_atoms=12 \(this estimator: 8\)"):
        SharedMemoryRegressor(base=base, memory=path, **TINY).fit(fam.X_train, fam.y_train)
    reused = SharedMemoryRegressor(base=base, memory=path, n_atoms=model.n_atoms_,
                                   freeze_memory=True, **TINY).fit(fam.X_train, fam.y_train)
    torch.testing.assert_close(_memory(reused)["atom_deltas"],
                               _memory(model)["atom_deltas"])


def test_predicting_an_unfamiliar_description_warns_and_still_predicts(fam, shared):
    X = fam.X_heldout.head(4)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # new combinations of seen phrases: no warning
        familiar = shared.predict(X)
    german = X.assign(description="Eine Funktion mit starkem Sinusterm und doppelter Kurve.")
    with pytest.warns(qlsk.UnfamiliarDescriptionWarning, match="unlike every description"):
        guessed = shared.predict(german)
    assert guessed.shape == familiar.shape and np.isfinite(guessed).all()


def test_shared_memory_predicts_without_descriptions(fam, shared):
    X = fam.X_heldout
    blind = shared.predict(X, use_description=False)
    np.testing.assert_array_equal(blind, shared.predict(X.drop(columns="description"),
                                                        use_description=False))
    np.testing.assert_array_equal(blind, shared.predict(X.assign(description="x"),
                                                        use_description=False))
    assert blind.shape == (len(X),) and not np.allclose(blind, shared.predict(X))


def test_save_and_load_keep_memory_prior_map_stages_and_encoder(fam, base, tmp_path):
    X, y = fam.X_train, fam.y_train
    first = X.description.isin(X.description.unique()[:4])
    grown = SharedMemoryRegressor(base=base, text_encoder="lexical", warm_start=True,
                                  grow_atoms=2, freeze_previous_atoms=True, **TINY)
    grown.fit(X[first], y[first]).fit(X[~first], y[~first])
    path = tmp_path / "shared.qlsk"
    qlsk.save(grown, path)
    loaded = qlsk.load(path)
    assert isinstance(loaded, SharedMemoryRegressor) and loaded.text_encoder == "lexical"
    assert loaded.n_atoms_ == grown.n_atoms_ == grown.n_atoms + 2
    np.testing.assert_array_equal(loaded.predict(fam.X_heldout), grown.predict(fam.X_heldout))
    np.testing.assert_array_equal(loaded.atom_usage(fam.X_heldout),
                                  grown.atom_usage(fam.X_heldout))
    assert len(loaded.stages_) == 2 and loaded.descriptions_ == grown.descriptions_
    np.testing.assert_allclose(loaded.route_drift().drift, grown.route_drift().drift,
                               atol=1e-6)
    loaded.fit(fam.X_heldout, fam.y_heldout)  # warm_start: a third stage on top
    assert len(loaded.stages_) == 3
    with pytest.raises(FileExistsError):
        qlsk.save(grown, path)


def test_save_refuses_what_json_and_a_qlsk_mlp_cannot_hold(fam, base, tmp_path):
    X, y = fam.X_train, fam.y_train
    own = SharedMemoryRegressor(base=base, text_encoder=lambda text: np.ones(4), **TINY)
    with pytest.raises(TypeError, match="text_encoder"):
        qlsk.save(own.fit(X, y), tmp_path / "a.qlsk")
    custom = torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))
    other = SharedMemoryRegressor(base=custom, text_encoder="lexical", **TINY).fit(X, y)
    with pytest.raises(TypeError, match="custom torch base"):
        qlsk.save(other, tmp_path / "b.qlsk")
    assert not list(tmp_path.iterdir())


def test_pickles_naming_the_old_module_paths_still_load(fam, shared):
    # Before the estimators were split by concern these classes lived elsewhere, and a
    # pickle names each class's module: rewrite today's paths to those and load.
    few = FewShotRegressor(shared, **FEW_SHOT).fit(fam.X_heldout.iloc[:8], fam.y_heldout[:8])
    old = {b"qlsk.estimators.fewshot\nFewShotRegressor":
           b"qlsk.estimators.multitask\nFewShotRegressor",
           b"qlsk.estimators._described\n_TaskNet": b"qlsk.estimators.multitask\n_TaskNet",
           b"qlsk.estimators._described\n_Packed": b"qlsk.estimators.multitask\n_Packed",
           b"qlsk.nn\nMLP": b"qlsk.estimators._net\nMLP",
           b"qlsk.estimators.callbacks\nStopOnDivergence":
           b"qlsk.estimators._net\nStopOnDivergence"}
    for model in (shared, few):
        data = pickle.dumps(model, protocol=2)  # protocol 2 names classes as text lines
        for new_path, old_path in old.items():
            data = data.replace(new_path, old_path)
        assert b"qlsk.estimators.multitask\n_TaskNet" in data
        again = pickle.loads(data)
        np.testing.assert_array_equal(again.predict(fam.X_heldout), model.predict(fam.X_heldout))
