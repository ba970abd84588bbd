"""Task families: members, descriptions, the held-out split and the loader."""

import itertools

import numpy as np
import pytest

from qlsk.simlib import DEVELOPMENT_FAMILIES, REPORT_FAMILIES, list_families, load_family
from qlsk.simlib.families import ADDED, FAMILIES, PARAMETER, SCALE, WARP

# Kinds whose levels must change a member's shape, not only its scale.
SHAPE_KINDS = (ADDED, PARAMETER, WARP)


@pytest.fixture(scope="module", params=list(FAMILIES))
def family(request):
    return load_family(request.param, n_per_member=12, n_test=20, n_source=30,
                       random_state=0)


def test_list_families_covers_five_simulators_and_four_kinds_of_factor():
    table = list_families()
    assert set(table.name) == {"ishigami-ab", "friedman-sine", "mixed-2d", "borehole-flow",
                               "piston-cycle", "wingweight-extras", "robot-arm"}
    assert (table.n_members >= 9).all() and (table.n_heldout >= 3).all()
    mixed = table.set_index("name").loc["mixed-2d"]
    assert len(mixed.simulators.split(",")) == 4  # different simulators, one input box
    assert len({s for row in table.simulators for s in row.split(",")}) >= 5
    kinds = {k for row in table.kinds for k in row.split(",")}
    assert {SCALE, ADDED, PARAMETER, WARP} <= kinds


def test_development_and_report_families_are_disjoint_and_cover_all():
    assert not set(DEVELOPMENT_FAMILIES) & set(REPORT_FAMILIES)
    assert set(DEVELOPMENT_FAMILIES) | set(REPORT_FAMILIES) == set(FAMILIES)
    assert len(REPORT_FAMILIES) >= 3
    table = list_families().set_index("name")
    assert (table.role.loc[list(DEVELOPMENT_FAMILIES)] == "development").all()
    assert (table.role.loc[list(REPORT_FAMILIES)] == "report").all()

    def simulators(names):
        return {s for row in table.simulators.loc[list(names)] for s in row.split(",")}

    assert simulators(REPORT_FAMILIES) - simulators(DEVELOPMENT_FAMILIES)
    assert load_family(REPORT_FAMILIES[0], n_per_member=1, n_test=0, n_source=0).role == "report"


def test_rows_are_tagged_and_split(family):
    members = family.members
    n = len(members)
    assert len(family.frame) == 12 * n and len(family.test_frame) == 20 * n
    assert set(family.train_members) | set(family.heldout_members) == set(members.member)
    assert not set(family.train_members) & set(family.heldout_members)
    assert list(family.X_train.columns) == [*family.feature_names, "description"]
    assert len(family.X_train) == 12 * len(family.train_members) == len(family.y_train)
    assert set(family.groups_train) == set(family.train_members)
    assert set(family.groups_heldout) == set(family.heldout_members)
    assert members.description.is_unique  # the text alone tells members apart
    lo, hi = family.bounds[:, 0], family.bounds[:, 1]
    X = family.frame[family.feature_names].to_numpy()
    assert ((X >= lo) & (X <= hi)).all()
    assert family.y_source.shape == (30,)
    paraphrased = family.X_heldout_paraphrased
    assert paraphrased.shape == family.X_heldout.shape
    assert paraphrased[family.feature_names].equals(family.X_heldout[family.feature_names])
    assert set(family.paraphrases) == set(family.heldout_members)


def test_same_seed_same_draws(family):
    again = load_family(family.name, n_per_member=12, n_test=20, n_source=30,
                        random_state=0)
    assert again.frame.equals(family.frame) and again.test_frame.equals(family.test_frame)
    assert np.array_equal(again.X_source, family.X_source)
    other = load_family(family.name, n_per_member=12, n_test=20, n_source=30,
                        random_state=1)
    assert not other.frame.equals(family.frame)


def test_test_rows_are_clean_and_training_rows_noisy(family):
    for member, rows in family.test_frame.groupby("member"):
        f = family.functions[member]
        np.testing.assert_allclose(f(rows[family.feature_names].to_numpy()), rows.y)
    big = load_family(family.name, n_per_member=4000, n_test=0, n_source=0, noise=0.2,
                      random_state=1)
    row = big.members.iloc[0]
    rows = big.frame[big.frame.member == row.member]
    residual = rows.y - big.functions[row.member](rows[big.feature_names].to_numpy())
    assert residual.std() == pytest.approx(0.2 * row.target_std, rel=0.05)


def test_heldout_members_are_new_combinations_of_seen_levels(family):
    members = family.members.set_index("member")

    def levels(name):
        params = dict(members.loc[name, "params"])
        params.pop("standardised", None)
        return {"function": members.loc[name, "function"],
                **{k: str(v) for k, v in params.items()}}

    trained = [levels(m) for m in family.train_members]
    for name in family.heldout_members:
        own = levels(name)
        assert own not in trained
        for key, value in own.items():  # every level is seen in training, with others
            assert any(t[key] == value for t in trained), (name, key)


def _phrases(family, member):
    """(factor, level, phrase, synonym) of each of the member's factors."""
    levels = family.members.set_index("member").levels[member]
    table = family.factors.set_index(["factor", "level"])
    return [(f, lv, table.phrase[f, lv], table.synonym[f, lv]) for f, lv in levels.items()]


def test_heldout_phrases_are_all_seen_in_training_members_apart(family):
    members = family.members.set_index("member")
    assert len(family.factors.factor.unique()) == 2
    for name in family.heldout_members:
        own = members.levels[name]
        assert not any(members.levels[t] == own for t in family.train_members)
        for factor, level, phrase, _ in _phrases(family, name):
            assert phrase in members.description[name]
            seen = [t for t in family.train_members if members.levels[t][factor] == level]
            assert seen, (name, factor)  # the level is seen in training ...
            assert all(phrase in members.description[t] for t in seen)  # ... in its words


def test_paraphrases_reword_the_heldout_descriptions(family):
    members = family.members.set_index("member")
    for name, paraphrase in family.paraphrases.items():
        assert paraphrase != members.description[name]
        assert paraphrase not in set(members.description)
        for _, _, phrase, synonym in _phrases(family, name):
            assert phrase.lower() not in paraphrase.lower()  # other words ...
            assert synonym in paraphrase  # ... for the same level
        # The paraphrased rows are the member's own rows: same inputs, same function.
        rows = family.groups_heldout == name
        assert (family.X_heldout_paraphrased.description[rows] == paraphrase).all()
        assert (family.X_heldout.description[rows] == members.description[name]).all()
    assert len(set(family.paraphrases.values())) == len(family.paraphrases)


def test_members_differ_as_functions(family):
    X = family.source_function.sample(3000, random_state=0)
    y = {m: f(X) for m, f in family.functions.items()}
    levels = family.members.set_index("member").levels
    kinds = dict(zip(family.factors.factor, family.factors.kind))
    for a, b in itertools.combinations(y, 2):
        corr = np.corrcoef(y[a], y[b])[0, 1]
        ratio = y[a].std() / y[b].std()
        # Nearly proportional only where the output's scale changes.
        assert corr < 0.999 or not 1 / 1.2 < ratio < 1.2, (a, b, corr)
        differ = [f for f in levels[a] if levels[a][f] != levels[b][f]]
        if len(differ) == 1 and kinds[differ[0]] in SHAPE_KINDS:
            assert corr < 0.999, (a, b, corr)  # not a change of scale in disguise


def _share(f, X, X_new):
    """The share of f's variance that redrawing some inputs (X -> X_new) changes."""
    return np.mean((f(X_new) - f(X)) ** 2) / (2 * np.var(f(X)))


def test_added_terms_change_the_function_on_inputs_the_simulator_barely_uses():
    checked = 0
    for name in FAMILIES:
        fam = load_family(name, n_per_member=1, n_test=0, n_source=0)
        added = fam.factors[fam.factors.kind == ADDED]
        if added.empty:
            continue
        factor, inputs = added.factor.iloc[0], added.inputs.iloc[0]
        columns = [fam.feature_names.index(c) for c in inputs]
        X = fam.source_function.sample(3000, random_state=0)
        X_new = X.copy()
        X_new[:, columns] = fam.source_function.sample(3000, random_state=1)[:, columns]
        assert _share(fam.source_function, X, X_new) < 0.005  # barely used by the simulator
        for member, levels in fam.members.set_index("member").levels.items():
            share = _share(fam.functions[member], X, X_new)
            assert share < 0.005 if levels[factor] == "none" else share > 0.02, member
        checked += 1
    assert checked >= 2


def test_descriptions_use_the_words_of_their_levels():
    fam = load_family("friedman-sine", n_per_member=1, n_test=0, n_source=0)
    d = fam.members.set_index("member").description
    assert "strong" in d["fried-w20-f2"] and "very fast" in d["fried-w20-f2"]
    assert "weak" in d["fried-w5-f0.5"] and "slowly" in d["fried-w5-f0.5"]
    mixed = load_family("mixed-2d", n_per_member=1, n_test=0, n_source=0)
    md = mixed.members.set_index("member")
    assert "mirrored" in md.description["branin-mirrored"]
    assert md.target_std["branin-unchanged"] == pytest.approx(1.0, abs=0.02)


def test_same_seed_same_data_and_bad_arguments():
    a = load_family("ishigami-ab", n_per_member=5, n_test=2, n_source=3, random_state=3)
    b = load_family("ishigami-ab", n_per_member=5, n_test=2, n_source=3, random_state=3)
    assert a.frame.equals(b.frame) and np.array_equal(a.X_source, b.X_source)
    with pytest.raises(KeyError, match="did you mean 'ishigami-ab'"):
        load_family("ishigami-a")
    with pytest.raises(ValueError, match="n_per_member"):
        load_family("ishigami-ab", n_per_member=2.5)
    with pytest.raises(ValueError, match="noise"):
        load_family("ishigami-ab", noise=-1)
