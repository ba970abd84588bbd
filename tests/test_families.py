"""Task families: members, descriptions, the held-out split and the loader."""

import numpy as np
import pytest

from qlsk.simlib import list_families, load_family


@pytest.fixture(scope="module", params=["ishigami-ab", "friedman-sine", "mixed-2d"])
def family(request):
    return load_family(request.param, n_per_member=12, n_test=20, n_source=30,
                       random_state=0)


def test_list_families_has_three_families_of_at_least_twelve_members():
    table = list_families()
    assert set(table.name) >= {"ishigami-ab", "friedman-sine", "mixed-2d"}
    assert (table.n_members >= 12).all() and (table.n_heldout >= 3).all()
    mixed = table.set_index("name").loc["mixed-2d"]
    assert len(mixed.simulators.split(",")) == 4  # different simulators, one input box


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
