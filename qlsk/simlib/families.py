"""Task families: many related targets, each described in words, for one shared adapter.

A family is a set of *members* on one input box. Each member is a simulator with a
plain-language description that says how it differs from the others (a strong or weak
interaction, a faster or slower oscillation, a mirrored or amplified surface), so that
a sentence encoder can tell members apart from their text alone. Descriptions are
compositions of a few phrases; the **held-out** members are new combinations of phrases
that training members use, so a model that learned what each phrase does can predict
them zero-shot. Every member also carries a **paraphrase**: the same meaning in other
words and another order, built from a synonym of each phrase, so that a benchmark can
check that a model reads meaning rather than exact strings.

Each family varies two *factors*, each of one kind: the output's scale, a term added on
inputs the simulator barely uses (so that it cannot pass for a change of scale), one of
the simulator's own parameters, or a warp of one input. The families are split into
:data:`DEVELOPMENT_FAMILIES`, on which designs and defaults are chosen, and
:data:`REPORT_FAMILIES`, whose numbers are reported and on which nothing is tuned.
``docs/multitask.md`` lists the families, their factors and held-out members.
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


# The kinds of factor a family varies.
SCALE = "output scale"
ADDED = "added term"  # on inputs the simulator barely uses
PARAMETER = "simulator parameter"
WARP = "input warp"
SIMULATOR = "simulator"  # mixed-2d: which simulator
MODIFIER = "modifier"  # mixed-2d: a warp, a scale or an added ripple, one per level


@dataclass(frozen=True)
class _Factor:
    """One way members differ: a level per member, worded as a phrase and a synonym."""

    name: str
    kind: str
    words: dict  # level -> the phrase of the canonical descriptions
    synonyms: dict  # level -> the same meaning in other words, for the paraphrases
    inputs: tuple[str, ...] = ()  # an added term's inputs, which the simulator barely uses


@dataclass(frozen=True)
class _Member:
    name: str
    description: str
    paraphrase: str
    function: TestFunction
    heldout: bool
    levels: tuple


@dataclass(frozen=True)
class _Family:
    why: str
    source: TestFunction
    source_description: str
    factors: tuple[_Factor, _Factor]
    members: tuple[_Member, ...]


def _grid(first: _Factor, second: _Factor, heldout: set, build, name, sentence,
          paraphrase):
    """Members for every pair of levels: ``build(a, b)``, ``name(a, b)``; ``sentence``
    and ``paraphrase`` compose the two factors' phrases and their synonyms."""
    return tuple(
        _Member(name(a, b), sentence(first.words[a], second.words[b]),
                paraphrase(first.synonyms[a], second.synonyms[b]), build(a, b),
                (a, b) in heldout, (a, b))
        for a, b in itertools.product(first.words, second.words))


def _ishigami() -> _Family:
    a = _Factor("a", PARAMETER,
                {5.0: "a faint squared-sine term in x2", 7.0: "a moderate squared-sine term in x2",
                 9.0: "a strong squared-sine term in x2"},
                {5.0: "the squared sine of x2 is faint",
                 7.0: "the squared sine of x2 is of middling size",
                 9.0: "the squared sine of x2 is large"})
    b = _Factor("b", PARAMETER,
                {0.0: "no interaction between x1 and x3",
                 0.05: "a weak interaction between x1 and x3",
                 0.1: "a moderate interaction between x1 and x3",
                 0.2: "a strong interaction between x1 and x3"},
                {0.0: "x1 and x3 do not interact", 0.05: "x1 and x3 interact weakly",
                 0.1: "x1 and x3 interact moderately", 0.2: "x1 and x3 interact strongly"})
    return _Family(
        "Ishigami a x b: the prototype's family grown to 12 members; each held-out member "
        "pairs a squared-sine level and an interaction level that training members use "
        "apart.",
        get_function("ishigami", a=7.0, b=0.1),
        "Ishigami function with a moderate squared-sine term in x2 and a moderate "
        "interaction between x1 and x3.",
        (a, b),
        _grid(a, b, {(5.0, 0.05), (7.0, 0.2), (9.0, 0.0), (9.0, 0.1)},
              lambda a, b: get_function("ishigami", a=a, b=b),
              lambda a, b: f"ishigami-a{a:g}-b{b:g}",
              lambda wa, wb: f"Ishigami function with {wa} and {wb}.",
              lambda sa, sb: f"In the Ishigami function {sb}, and {sa}."),
    )


def _friedman() -> _Family:
    weight = _Factor("weight", PARAMETER,
                     {5.0: "a weak", 10.0: "a moderate", 20.0: "a strong"},
                     {5.0: "weakly", 10.0: "moderately", 20.0: "strongly"})
    speed = _Factor("frequency", PARAMETER,
                    {0.5: "slowly", 1.0: "at the standard rate", 1.5: "fast",
                     2.0: "very fast"},
                    {0.5: "at a leisurely pace", 1.0: "at its usual speed", 1.5: "quickly",
                     2.0: "very quickly"})
    return _Family(
        "Friedman's sine interaction between x1 and x2 at three weights and four "
        "frequencies; the quadratic and linear terms stay. Each held-out member pairs a "
        "weight and a speed that training members use apart.",
        get_function("fried"),
        "Friedman function with a moderate sine interaction between x1 and x2 that "
        "oscillates at the standard rate.",
        (weight, speed),
        _grid(weight, speed, {(5.0, 1.5), (10.0, 2.0), (20.0, 0.5), (20.0, 1.0)},
              lambda w, f: get_function("fried", coefficients=(w, 20.0, 10.0, 5.0),
                                        frequency=f),
              lambda w, f: f"fried-w{w:g}-f{f:g}",
              lambda ww, sw: f"Friedman function with {ww} sine interaction between x1 "
                             f"and x2 that oscillates {sw}.",
              lambda sw, ss: f"In Friedman's benchmark x1 and x2 interact {sw} through a "
                             f"sine wave that swings {ss}."),
    )


# The mixed family's simulators, each read on the unit square and standardised.
_SURFACES = {
    "curretal88exp": "The Currin exponential surface",
    "limetal02non": "The Lim non-polynomial surface",
    "franke2d": "Franke's surface of two peaks and a dip",
    "branin": "The Branin valley surface",
}
_SURFACE_SYNONYMS = {
    "curretal88exp": "the exponential test surface of Currin",
    "limetal02non": "Lim's non-polynomial test surface",
    "franke2d": "the two-peak, one-dip surface of Franke",
    "branin": "Branin's valley-shaped surface",
}
_MODIFIERS = {
    "unchanged": ("as it is", lambda f, U: f(U)),
    "mirrored": ("mirrored along x1",
                 lambda f, U: f(np.column_stack([1 - U[:, 0], U[:, 1]]))),
    "amplified": ("with its response amplified twofold", lambda f, U: 2 * f(U)),
    "ripple": ("with a fast ripple along x2 added",
               lambda f, U: f(U) + 0.5 * np.sin(6 * np.pi * U[:, 1])),
}
_MODIFIER_SYNONYMS = {
    "unchanged": "Left untouched", "mirrored": "Flipped left to right in x1",
    "amplified": "Made twice as large in output",
    "ripple": "Overlaid with a quick wave in x2",
}


@cache
def _stats(name: str, **params) -> tuple[float, float]:
    """Mean and sd of a library function on the reference sample of its box."""
    f = get_function(name, **params)
    y = f.formula(_sample(f.bounds, _REFERENCE_ROWS, np.random.default_rng(_REFERENCE_SEED)))
    return float(y.mean()), float(y.std())


@cache
def _standardised(name: str):
    """``(f(x) - mean) / sd`` of a library function, read on the unit square."""
    f = get_function(name)
    lo, span = f.bounds[:, 0], f.bounds[:, 1] - f.bounds[:, 0]
    mean, sd = _stats(name)
    return lambda U: (f.formula(lo + U * span) - mean) / sd


def _mixed() -> _Family:
    def build(surface, modifier):
        g, (words, apply) = _standardised(surface), _MODIFIERS[modifier]
        return make(surface, [[0, 1]] * 2, f"{_SURFACES[surface]}, {words}.",
                    lambda U: apply(g, U), modifier=modifier, standardised=True)

    def average(U):
        return np.mean([_standardised(s)(U) for s in _SURFACES], axis=0)

    surfaces = _Factor("simulator", SIMULATOR, _SURFACES, _SURFACE_SYNONYMS)
    modifiers = _Factor("modifier", MODIFIER, {m: w for m, (w, _) in _MODIFIERS.items()},
                        _MODIFIER_SYNONYMS)
    return _Family(
        "Four different two-input simulators (Currin, Lim, Franke, Branin), each "
        "standardised on the unit square, as they are, mirrored, amplified or with a "
        "ripple. Each held-out member applies a modifier seen on other simulators to a "
        "simulator seen with other modifiers.",
        make("mixed-2d-average", [[0, 1]] * 2,
             "The average of four standardised surfaces: Currin, Lim, Franke and Branin.",
             average),
        "The average of four standardised surfaces: Currin, Lim, Franke and Branin.",
        (surfaces, modifiers),
        _grid(surfaces, modifiers,
              {("curretal88exp", "mirrored"), ("limetal02non", "amplified"),
               ("franke2d", "ripple"), ("branin", "unchanged")},
              build, lambda s, m: f"{s}-{m}", lambda ws, wm: f"{ws}, {wm}.",
              lambda ss, sm: f"{sm}: {ss}."),
    )


# ---- families of one physical simulator, modified by scale, added terms and warps ------
#
# A member is ``scale * f(warp(x)) + sd(f) * term(u)``: ``u`` the inputs rescaled to
# [0, 1], ``warp`` replacing one input's value ``lo + span * u`` by ``lo + span * w(u)``,
# ``term`` reading only inputs the simulator barely uses, sized by the simulator's sd.

_WARPS = {
    "identity": lambda u: u, "reversed": lambda u: 1 - u, "squared": lambda u: u**2,
    "root": np.sqrt,
}


def _unit(f: TestFunction, X, name: str):
    i = f.input_names.index(name)
    return (X[:, i] - f.bounds[i, 0]) / (f.bounds[i, 1] - f.bounds[i, 0])


def _modified(name, levels: dict, *, scale=1.0, warp=("identity", None), term=None,
              params=None) -> TestFunction:
    """The library function ``name`` (built with ``params``), warped, scaled and with an
    added term; its parameters are ``params`` and the factors' ``levels``."""
    params = params or {}
    f, (_, sd) = get_function(name, **params), _stats(name, **params)
    shape, column = _WARPS[warp[0]], warp[1]

    def formula(X):
        if column is not None:
            i = f.input_names.index(column)
            X = X.copy()
            X[:, i] = f.bounds[i, 0] + shape(_unit(f, X, column)) * (
                f.bounds[i, 1] - f.bounds[i, 0])
        y = scale * f.formula(X)
        return y if term is None else y + sd * term(lambda c: _unit(f, X, c))

    return make(name, f.bounds, f.description, formula, f.input_names, **params, **levels)


def _borehole() -> _Family:
    scale = _Factor("scale", SCALE,
                    {0.5: "at half its usual rate", 1.0: "at its usual rate",
                     2.0: "at double its usual rate"},
                    {0.5: "half the normal amount", 1.0: "the normal amount",
                     2.0: "twice the normal amount"})
    # r (radius of influence), Tu and Tl (the aquifers' transmissivities) together carry
    # well under 1% of the borehole flow's variance.
    terms = {
        "none": None,
        "rise-Tu": lambda u: 0.6 * (2 * u("Tu") - 1),
        "wave-Tl": lambda u: 0.6 * np.sin(2 * np.pi * u("Tl")),
        "bump-r": lambda u: 1.2 * np.exp(-(((u("r") - 0.5) / 0.2) ** 2)) - 0.5,
    }
    term = _Factor("term", ADDED,
                   {"none": "with nothing added",
                    "rise-Tu": "plus a steady rise along the upper aquifer's "
                               "transmissivity Tu",
                    "wave-Tl": "plus a wave along the lower aquifer's transmissivity Tl",
                    "bump-r": "plus a bump in the middle of the radius of influence r"},
                   {"none": "No extra term is included",
                    "rise-Tu": "A term growing linearly with Tu, the transmissivity of the "
                               "upper aquifer, is included",
                    "wave-Tl": "A term oscillating once across Tl, the transmissivity of "
                               "the lower aquifer, is included",
                    "bump-r": "A term peaking at mid-range values of r, the radius of "
                              "influence, is included"},
                   inputs=("r", "Tu", "Tl"))
    return _Family(
        "The borehole's water flow at three scales, with one of three terms added on "
        "inputs the flow barely depends on (r, Tu, Tl), or none: a change of scale "
        "next to changes that no rescaling can mimic. Each held-out member pairs a "
        "scale and a term that training members use apart.",
        get_function("borehole"),
        "Water flows through a borehole at its usual rate, with nothing added.",
        (scale, term),
        _grid(scale, term, {(0.5, "wave-Tl"), (1.0, "bump-r"), (2.0, "none"),
                            (2.0, "rise-Tu")},
              lambda s, t: _modified("borehole", {"scale": s, "term": t}, scale=s,
                                     term=terms[t]),
              lambda s, t: f"borehole-s{s:g}-{t}",
              lambda ws, wt: f"Water flows through a borehole {ws}, {wt}.",
              lambda ss, st: f"{st}, and the borehole carries {ss} of water."),
    )


def _piston() -> _Family:
    warp = _Factor("warp", WARP,
                   {"identity": "with its surface area read as given",
                    "reversed": "with its surface area read backwards",
                    "squared": "with its surface area skewed toward small areas",
                    "root": "with its surface area skewed toward large areas"},
                   {"identity": "the area S left untouched",
                    "reversed": "the area S flipped end to end",
                    "squared": "the area S crowded near its lower bound",
                    "root": "the area S crowded near its upper bound"})
    scale = _Factor("scale", SCALE,
                    {0.5: "cut in half", 1.0: "kept as computed", 2.0: "stretched twofold"},
                    {0.5: "halved", 1.0: "unaltered", 2.0: "doubled"})
    return _Family(
        "A piston's cycle time with its dominant input, the surface area S, read as given, "
        "reversed or warped toward either end of its range, at three scales. Each "
        "held-out member pairs a warp and a scale that training members use apart.",
        get_function("piston"),
        "The cycle time of a piston, kept as computed, with its surface area read as "
        "given.",
        (warp, scale),
        _grid(warp, scale, {("identity", 2.0), ("reversed", 0.5), ("squared", 1.0),
                            ("root", 2.0)},
              lambda w, s: _modified("piston", {"warp": w, "scale": s}, scale=s,
                                     warp=(w, "S")),
              lambda w, s: f"piston-{w}-s{s:g}",
              lambda ww, ws: f"The cycle time of a piston, {ws}, {ww}.",
              lambda sw, ss: f"With {sw}, the piston's time per cycle is {ss}."),
    )


def _wingweight() -> _Family:
    # The fuel weight Wfw and the dynamic pressure q carry under 0.1% of the variance.
    terms = {
        "none": None,
        "rise-Wfw": lambda u: 0.6 * (2 * u("Wfw") - 1),
        "dip-q": lambda u: 1.2 * (2 * u("q") - 1) ** 2 - 0.4,
        "ripple-both": lambda u: 0.6 * np.sin(2 * np.pi * (u("Wfw") + u("q"))),
    }
    term = _Factor("term", ADDED,
                   {"none": "carrying no extra weight",
                    "rise-Wfw": "carrying an extra weight that grows with the fuel weight "
                                "Wfw",
                    "dip-q": "carrying an extra weight that dips at middling dynamic "
                             "pressure q",
                    "ripple-both": "carrying an extra weight that ripples across fuel "
                                   "weight and dynamic pressure together"},
                   {"none": "nothing is added",
                    "rise-Wfw": "a load increasing with Wfw, the weight of the fuel, is "
                                "added",
                    "dip-q": "a load lowest when q, the dynamic pressure, is mid-range, "
                             "is added",
                    "ripple-both": "a load oscillating jointly in Wfw and q is added"},
                   inputs=("Wfw", "q"))
    warp = _Factor("warp", WARP,
                   {"identity": "its load factor Nz taken as is",
                    "reversed": "its load factor Nz turned around",
                    "squared": "its load factor Nz compressed toward the low end"},
                   {"identity": "Nz at face value", "reversed": "Nz mirrored over its range",
                    "squared": "Nz bunched at small values"})
    return _Family(
        "A light aircraft wing's weight with one of three extra weights on inputs it "
        "barely uses (the fuel weight Wfw and the dynamic pressure q), or none, and its "
        "strongest input, the load factor Nz, as is, reversed or warped. Each held-out "
        "member pairs a term and a warp that training members use apart.",
        get_function("wingweight"),
        "The weight of a light aircraft wing with its load factor Nz taken as is, "
        "carrying no extra weight.",
        (term, warp),
        _grid(term, warp, {("none", "reversed"), ("rise-Wfw", "squared"),
                           ("dip-q", "identity"), ("ripple-both", "reversed")},
              lambda t, w: _modified("wingweight", {"term": t, "warp": w},
                                     term=terms[t], warp=(w, "Nz")),
              lambda t, w: f"wingweight-{t}-{w}",
              lambda wt, ww: f"The weight of a light aircraft wing with {ww}, {wt}.",
              lambda st, sw: f"A wing weight model for a light plane, reading {sw}, to "
                             f"which {st}."),
    )


def _robot() -> _Family:
    segments = _Factor("segments", PARAMETER,
                       {2: "two segments", 3: "three segments", 4: "four segments"},
                       {2: "a pair of links", 3: "three links", 4: "four links"})
    # Every joint angle is read on a fraction of its range: theta -> fraction * theta.
    sweep = _Factor("sweep", WARP,
                    {1.0: "full turns", 0.75: "three-quarter turns", 0.5: "half turns",
                     0.25: "quarter turns"},
                    {1.0: "a whole revolution", 0.75: "three quarters of a revolution",
                     0.5: "half a revolution", 0.25: "a quarter of a revolution"})

    def build(n, fraction):
        f = get_function("robot", segments=n)
        angles = np.r_[np.full(4, fraction), np.ones(4)]
        return make("robot", f.bounds, f.description, lambda X: f.formula(X * angles),
                    f.input_names, segments=n, sweep=fraction)

    return _Family(
        "The distance of a robot arm's end from its shoulder with two, three or four "
        "segments (the simulator's own parameter), its joints sweeping a full, "
        "three-quarter, half or quarter turn. Each held-out member pairs a segment "
        "count and a sweep that training members use apart.",
        get_function("robot"),
        "How far the end of a robot arm with four segments lies from its shoulder, with "
        "joints that sweep full turns.",
        (segments, sweep),
        _grid(segments, sweep, {(2, 0.75), (3, 0.25), (3, 1.0), (4, 0.5)}, build,
              lambda n, s: f"robot-{n}seg-sweep{s:g}",
              lambda wn, ws: f"How far the end of a robot arm with {wn} lies from its "
                             f"shoulder, with joints that sweep {ws}.",
              lambda sn, ss: f"Each joint rotates through {ss}; the output is the "
                             f"shoulder-to-tip distance of an arm made of {sn}."),
    )


FAMILIES = {"ishigami-ab": _ishigami, "friedman-sine": _friedman, "mixed-2d": _mixed,
            "borehole-flow": _borehole, "piston-cycle": _piston,
            "wingweight-extras": _wingweight, "robot-arm": _robot}
# Designs and defaults are chosen on the development families; the report families'
# numbers are the ones quoted, and nothing is tuned on them. Their simulators (piston,
# wing weight, robot arm) appear in no development family.
DEVELOPMENT_FAMILIES = ("ishigami-ab", "friedman-sine", "mixed-2d", "borehole-flow")
REPORT_FAMILIES = ("piston-cycle", "wingweight-extras", "robot-arm")


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
        One row per family: ``name``, ``role`` (``"development"``: designs and
        defaults are chosen on it; ``"report"``: its numbers are the ones quoted, see
        :data:`DEVELOPMENT_FAMILIES` and :data:`REPORT_FAMILIES`), ``dim``,
        ``n_members``, ``n_heldout``, ``simulators`` (the library functions its members
        use), ``factors`` and ``kinds`` (each factor's name and kind: ``output scale``,
        ``added term`` on inputs the simulator barely uses, ``simulator parameter``,
        ``input warp``; ``mixed-2d`` varies the ``simulator`` and a ``modifier``) and
        ``why``.
    """
    import pandas as pd

    rows = []
    for name in FAMILIES:
        family, _ = _family(name)
        rows.append({
            "name": name,
            "role": "development" if name in DEVELOPMENT_FAMILIES else "report",
            "dim": family.source.dim, "n_members": len(family.members),
            "n_heldout": sum(m.heldout for m in family.members),
            "simulators": ",".join(sorted({m.function.name for m in family.members})),
            "factors": ",".join(f.name for f in family.factors),
            "kinds": ",".join(f.kind for f in family.factors),
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
        - ``X_heldout_paraphrased``: ``X_heldout`` with each description replaced by
          its member's paraphrase (the same meaning in other words and another order),
          to check at predict time that a model reads meaning, not exact strings;
          ``paraphrases``: held-out member name -> paraphrase (for ``test_frame``).
        - ``test_frame``: ``n_test`` clean rows per member, columns as ``frame``.
        - ``members``: one row per member: ``member``, ``description``,
          ``paraphrase``, ``split``, ``function`` (its library name), ``params``,
          ``levels`` (factor name -> level), ``target_std``, ``noise_std``;
          ``train_members`` and ``heldout_members``: lists of names.
        - ``factors``: one row per factor level: ``factor``, ``kind``, ``level``,
          ``phrase`` (its words in the descriptions), ``synonym`` (its words in the
          paraphrases) and ``inputs`` (an added term's inputs, which the simulator
          barely uses; empty otherwise).
        - ``functions``: member name -> :class:`TestFunction` giving clean targets.
        - ``X_source, y_source, source_function, source_description``: plentiful
          clean source data for a base network.
        - ``name``, ``role`` (``"development"`` or ``"report"``), ``why``,
          ``feature_names``, ``bounds``.

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
    >>> fam.paraphrases["ishigami-a9-b0"]
    'In the Ishigami function x1 and x3 do not interact, and the squared sine of x2 is large.'
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
    paraphrases = {m.name: m.paraphrase for m in family.members if m.heldout}
    split["X_heldout_paraphrased"] = split["X_heldout"].assign(
        description=[paraphrases[g] for g in split["groups_heldout"]])
    members = pd.DataFrame([{
        "member": m.name, "description": m.description, "paraphrase": m.paraphrase,
        "split": "heldout" if m.heldout else "train", "function": m.function.name,
        "params": dict(m.function.params),
        "levels": {f.name: level for f, level in zip(family.factors, m.levels)},
        "target_std": sds[m.name], "noise_std": noise * sds[m.name]}
        for m in family.members])
    factors = pd.DataFrame([{
        "factor": f.name, "kind": f.kind, "level": level, "phrase": f.words[level],
        "synonym": f.synonyms[level], "inputs": f.inputs} for f in family.factors
        for level in f.words])
    return Bunch(
        name=name, role="development" if name in DEVELOPMENT_FAMILIES else "report",
        why=family.why, feature_names=names, bounds=box.copy(),
        frame=frame, test_frame=test_frame, members=members, factors=factors,
        paraphrases=paraphrases,
        train_members=[m.name for m in family.members if not m.heldout],
        heldout_members=[m.name for m in family.members if m.heldout],
        functions={m.name: m.function for m in family.members},
        X_source=X_source, y_source=family.source(X_source),
        source_function=family.source, source_description=family.source_description,
        **split,
    )
