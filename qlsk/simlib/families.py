"""Task families: many related targets, each described in words, for one shared adapter.

A family is a set of *members* on one input box. Each member is a simulator with a
plain-language description that says how it differs from the others (a strong or weak
interaction, a faster or slower oscillation, a mirrored or amplified surface), so that
a sentence encoder can tell members apart from their text alone. Descriptions are
compositions of a few phrases; the **held-out** members are new combinations of phrases
that training members use, so a model that learned what each phrase does can predict
them zero-shot. ``docs/multitask.md`` lists the families and their splits.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from functools import cache

import numpy as np
from sklearn.utils import Bunch

from ._registry import TestFunction, check_count, get_function, make, unknown_name
from .tasks import _sample

# sd(member) and each simulator's standardisation come from one fixed, large sample:
# properties of the family, the same for every seed and row count.
_REFERENCE_ROWS, _REFERENCE_SEED = 20000, 12345


@dataclass(frozen=True)
class _Member:
    name: str
    description: str
    function: TestFunction
    heldout: bool


@dataclass(frozen=True)
class _Family:
    why: str
    source: TestFunction
    source_description: str
    members: tuple[_Member, ...]


def _grid(first: dict, second: dict, heldout: set, build, name, sentence):
    """Members for every pair of levels: ``build(a, b)``, ``name(a, b)``, ``sentence``."""
    return tuple(
        _Member(name(a, b), sentence(first[a], second[b]), build(a, b), (a, b) in heldout)
        for a, b in itertools.product(first, second))


def _ishigami() -> _Family:
    a_words = {5.0: "a faint squared-sine term in x2", 7.0: "a moderate squared-sine term in x2",
               9.0: "a strong squared-sine term in x2"}
    b_words = {0.0: "no interaction between x1 and x3",
               0.05: "a weak interaction between x1 and x3",
               0.1: "a moderate interaction between x1 and x3",
               0.2: "a strong interaction between x1 and x3"}
    return _Family(
        "Ishigami a x b: the prototype's family grown to 12 members; each held-out member "
        "pairs a squared-sine level and an interaction level that training members use "
        "apart.",
        get_function("ishigami", a=7.0, b=0.1),
        "Ishigami function with a moderate squared-sine term in x2 and a moderate "
        "interaction between x1 and x3.",
        _grid(a_words, b_words, {(5.0, 0.05), (7.0, 0.2), (9.0, 0.0), (9.0, 0.1)},
              lambda a, b: get_function("ishigami", a=a, b=b),
              lambda a, b: f"ishigami-a{a:g}-b{b:g}",
              lambda wa, wb: f"Ishigami function with {wa} and {wb}."),
    )


def _friedman() -> _Family:
    weight_words = {5.0: "a weak", 10.0: "a moderate", 20.0: "a strong"}
    speed_words = {0.5: "slowly", 1.0: "at the standard rate", 1.5: "fast",
                   2.0: "very fast"}
    return _Family(
        "Friedman's sine interaction between x1 and x2 at three weights and four "
        "frequencies; the quadratic and linear terms stay. Each held-out member pairs a "
        "weight and a speed that training members use apart.",
        get_function("fried"),
        "Friedman function with a moderate sine interaction between x1 and x2 that "
        "oscillates at the standard rate.",
        _grid(weight_words, speed_words, {(5.0, 1.5), (10.0, 2.0), (20.0, 0.5), (20.0, 1.0)},
              lambda w, f: get_function("fried", coefficients=(w, 20.0, 10.0, 5.0),
                                        frequency=f),
              lambda w, f: f"fried-w{w:g}-f{f:g}",
              lambda ww, sw: f"Friedman function with {ww} sine interaction between x1 "
                             f"and x2 that oscillates {sw}."),
    )


# The mixed family's simulators, each read on the unit square and standardised.
_SURFACES = {
    "curretal88exp": "The Currin exponential surface",
    "limetal02non": "The Lim non-polynomial surface",
    "franke2d": "Franke's surface of two peaks and a dip",
    "branin": "The Branin valley surface",
}
_MODIFIERS = {
    "unchanged": ("as it is", lambda f, U: f(U)),
    "mirrored": ("mirrored along x1",
                 lambda f, U: f(np.column_stack([1 - U[:, 0], U[:, 1]]))),
    "amplified": ("with its response amplified twofold", lambda f, U: 2 * f(U)),
    "ripple": ("with a fast ripple along x2 added",
               lambda f, U: f(U) + 0.5 * np.sin(6 * np.pi * U[:, 1])),
}


@cache
def _standardised(name: str):
    """``(f(x) - mean) / sd`` of a library function, read on the unit square."""
    f = get_function(name)
    lo, span = f.bounds[:, 0], f.bounds[:, 1] - f.bounds[:, 0]
    rng = np.random.default_rng(_REFERENCE_SEED)
    y = f.formula(lo + rng.random((_REFERENCE_ROWS, 2)) * span)
    mean, sd = float(y.mean()), float(y.std())
    return lambda U: (f.formula(lo + U * span) - mean) / sd


def _mixed() -> _Family:
    def build(surface, modifier):
        g, (words, apply) = _standardised(surface), _MODIFIERS[modifier]
        return make(surface, [[0, 1]] * 2, f"{_SURFACES[surface]}, {words}.",
                    lambda U: apply(g, U), modifier=modifier, standardised=True)

    def average(U):
        return np.mean([_standardised(s)(U) for s in _SURFACES], axis=0)

    modifiers = {m: words for m, (words, _) in _MODIFIERS.items()}
    return _Family(
        "Four different two-input simulators (Currin, Lim, Franke, Branin), each "
        "standardised on the unit square, as they are, mirrored, amplified or with a "
        "ripple. Each held-out member applies a modifier seen on other simulators to a "
        "simulator seen with other modifiers.",
        make("mixed-2d-average", [[0, 1]] * 2,
             "The average of four standardised surfaces: Currin, Lim, Franke and Branin.",
             average),
        "The average of four standardised surfaces: Currin, Lim, Franke and Branin.",
        _grid(_SURFACES, modifiers,
              {("curretal88exp", "mirrored"), ("limetal02non", "amplified"),
               ("franke2d", "ripple"), ("branin", "unchanged")},
              build, lambda s, m: f"{s}-{m}", lambda ws, wm: f"{ws}, {wm}."),
    )


FAMILIES = {"ishigami-ab": _ishigami, "friedman-sine": _friedman, "mixed-2d": _mixed}


@cache
def _family(name: str) -> tuple[_Family, dict]:
    try:
        family = FAMILIES[name]()
    except KeyError:
        raise unknown_name("family", name, FAMILIES, "list_families") from None
    rng = np.random.default_rng(_REFERENCE_SEED)
    reference = _sample(family.source.bounds, _REFERENCE_ROWS, rng)
    sds = {m.name: float(np.std(m.function(reference))) for m in family.members}
    return family, sds


def list_families():
    """List the task families.

    Returns
    -------
    pandas.DataFrame
        One row per family: ``name``, ``dim``, ``n_members``, ``n_heldout``,
        ``simulators`` (the library functions its members use) and ``why``.
    """
    import pandas as pd

    rows = []
    for name in FAMILIES:
        family, _ = _family(name)
        rows.append({
            "name": name, "dim": family.source.dim, "n_members": len(family.members),
            "n_heldout": sum(m.heldout for m in family.members),
            "simulators": ",".join(sorted({m.function.name for m in family.members})),
            "why": family.why,
        })
    return pd.DataFrame(rows)


def load_family(name, n_per_member=100, n_test=500, n_source=2000, noise=0.1,
                random_state=None):
    """Draw the data of a task family: noisy rows of every member, tagged by member.

    Parameters
    ----------
    name : str
        A family from :func:`list_families`, e.g. ``"ishigami-ab"``.
    n_per_member : int
        Noisy training rows drawn for every member (held-out members too: use them
        for few-shot adaptation, or ignore them for zero-shot).
    n_test : int
        Clean test rows per member.
    n_source : int
        Rows of the source function, to pretrain a base network.
    noise : float
        Label noise as a fraction of each member's sd: Gaussian with sd
        ``noise * sd(member)``.
    random_state : int, numpy.random.Generator or None
        The same seed gives the same data.

    Returns
    -------
    sklearn.utils.Bunch
        - ``frame``: a DataFrame of every noisy row, with the input columns
          (``feature_names``), ``description``, ``member``, ``split`` (``"train"`` or
          ``"heldout"``) and the target ``y``.
        - ``X_train, y_train, groups_train``: the training members' rows, ``X`` as a
          DataFrame of the inputs and ``description`` (what
          :class:`qlsk.estimators.multitask.SharedMemoryRegressor` fits), ``groups``
          the member names (for ``GroupKFold``).
        - ``X_heldout, y_heldout, groups_heldout``: the same for held-out members.
        - ``test_frame``: ``n_test`` clean rows per member, columns as ``frame``.
        - ``members``: one row per member: ``member``, ``description``, ``split``,
          ``function`` (its library name), ``params``, ``target_std``,
          ``noise_std``; ``train_members`` and ``heldout_members``: lists of names.
        - ``functions``: member name -> :class:`TestFunction` giving clean targets.
        - ``X_source, y_source, source_function, source_description``: plentiful
          clean source data for a base network.
        - ``name``, ``why``, ``feature_names``, ``bounds``.

    Raises
    ------
    KeyError
        If ``name`` is not a family; the message suggests the closest names.
    ValueError
        If a row count is not a non-negative integer or ``noise`` is negative.

    Examples
    --------
    >>> from qlsk.simlib import load_family
    >>> fam = load_family("ishigami-ab", n_per_member=10, n_test=5, random_state=0)
    >>> fam.X_train.columns.tolist()
    ['x1', 'x2', 'x3', 'description']
    >>> len(fam.train_members), len(fam.heldout_members), fam.X_train.shape
    (8, 4, (80, 4))
    >>> fam.X_train.description.iloc[0]
    'Ishigami function with a faint squared-sine term in x2 and no interaction between x1 and x3.'
    """
    import pandas as pd

    n_per_member, n_test, n_source = (check_count(n, label) for n, label in (
        (n_per_member, "n_per_member"), (n_test, "n_test"), (n_source, "n_source")))
    if not np.isfinite(noise) or noise < 0:
        raise ValueError(f"noise must be a finite number >= 0, got {noise!r}")
    family, sds = _family(name)
    box, names = family.source.bounds, list(family.source.input_names)
    rng = np.random.default_rng(random_state)

    def rows(member: _Member, n: int, noisy: bool) -> pd.DataFrame:
        X = _sample(box, n, rng)
        y = member.function(X)
        if noisy:
            y = y + rng.normal(0.0, noise * sds[member.name], size=n)
        frame = pd.DataFrame(X, columns=names)
        frame["description"] = member.description
        frame["member"] = member.name
        frame["split"] = "heldout" if member.heldout else "train"
        frame["y"] = y
        return frame

    frame = pd.concat([rows(m, n_per_member, True) for m in family.members],
                      ignore_index=True)
    test_frame = pd.concat([rows(m, n_test, False) for m in family.members],
                           ignore_index=True)
    X_source = _sample(box, n_source, rng)
    split = {}
    for part in ("train", "heldout"):
        chosen = frame[frame.split == part].reset_index(drop=True)
        split[f"X_{part}"] = chosen[[*names, "description"]]
        split[f"y_{part}"] = chosen["y"].to_numpy()
        split[f"groups_{part}"] = chosen["member"].to_numpy()
    members = pd.DataFrame([{
        "member": m.name, "description": m.description,
        "split": "heldout" if m.heldout else "train", "function": m.function.name,
        "params": dict(m.function.params), "target_std": sds[m.name],
        "noise_std": noise * sds[m.name]} for m in family.members])
    return Bunch(
        name=name, why=family.why, feature_names=names, bounds=box.copy(),
        frame=frame, test_frame=test_frame, members=members,
        train_members=[m.name for m in family.members if not m.heldout],
        heldout_members=[m.name for m in family.members if m.heldout],
        functions={m.name: m.function for m in family.members},
        X_source=X_source, y_source=family.source(X_source),
        source_function=family.source, source_description=family.source_description,
        **split,
    )
