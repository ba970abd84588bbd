"""Source -> target transfer tasks built from the library's functions."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import numpy as np
from sklearn.utils import Bunch

from ._registry import TestFunction, check_count, get_function, make, unknown_name


@dataclass(frozen=True)
class _Task:
    source: tuple  # (function name, params)
    target: tuple
    why: str
    description: str
    source_description: str
    unit_cube: bool = False  # both functions read the same unit-cube coordinates


def _f(name, **params):
    return (name, params)


TASKS: dict[str, _Task] = {
    "currin-lf-to-hf": _Task(
        _f("curretal88explc"), _f("curretal88exp"),
        "Classic multi-fidelity pair (Xiong et al. 2013): the low fidelity is a local "
        "average, so the discrepancy is smooth and largest where the function is steep.",
        "Currin exponential function, high fidelity: a smooth surface that rises "
        "steeply near x2 = 0.",
        "Currin exponential function, low fidelity: a local average of four shifted "
        "copies of the surface.",
    ),
    "park91a-lf-to-hf": _Task(
        _f("park91alc"), _f("park91a"),
        "Non-linear multiplicative and additive discrepancy between fidelities.",
        "Park 1991 function one, high fidelity: a square-root term plus an "
        "exponential of a sine.",
        "Park 1991 function one, low fidelity: the high-fidelity response distorted "
        "by a sine factor and quadratic terms.",
    ),
    "forrester-lf-to-hf": _Task(
        _f("forretal08lc"), _f("forretal08"),
        "A large, structured discrepancy in one dimension; easy to plot.",
        "Forrester function, high fidelity: an oscillation with growing amplitude on "
        "the unit interval.",
        "Forrester function, low fidelity: half the oscillation plus a linear trend "
        "and an offset.",
    ),
    "borehole-kw-range": _Task(
        _f("borehole"), _f("borehole", Kw_bounds=(1500, 15000)),
        "The same simulator on a shifted input range: a wider hydraulic conductivity "
        "range makes the target more non-linear and non-additive (Morris et al. 1993).",
        "Borehole water flow with a wide range of hydraulic conductivity: more "
        "non-linear and non-additive.",
        "Borehole water flow rate between two aquifers over the standard input box.",
        unit_cube=True,
    ),
    "ishigami-b-halved": _Task(
        _f("ishigami", a=7.0, b=0.1), _f("ishigami", a=7.0, b=0.05),
        "A parameterised family: the x1-x3 interaction is halved (Sobol' & Levitan 1999).",
        "Ishigami function with a weak interaction between x1 and x3.",
        "Ishigami function with the standard interaction between x1 and x3.",
    ),
    "friedman-sine-halved": _Task(
        _f("fried"), _f("fried", coefficients=(5.0, 20.0, 10.0, 5.0)),
        "A coefficient family: the sine interaction's weight is halved.",
        "Friedman function with a weaker sine interaction between x1 and x2.",
        "Friedman function: a sine interaction, a quadratic and two linear terms.",
    ),
    "friedman-sine-doubled": _Task(
        _f("fried"), _f("fried", frequency=2.0),
        "A hard shift: the sine interaction oscillates twice as fast (corr 0.41).",
        "Friedman function whose sine interaction between x1 and x2 oscillates twice "
        "as fast.",
        "Friedman function: a sine interaction, a quadratic and two linear terms.",
    ),
    "gfunc-reweighted": _Task(
        _f("gfunc"), _f("gfunc", a=[0, 1, 4.5, 9, 99, 99, 99, 99]),
        "Importance re-weighting: the target makes four inputs nearly inert (Sun 2022).",
        "Sobol G function where only the first four inputs matter.",
        "Sobol G function with slowly decreasing input importance.",
    ),
    "moon-hd-to-c2": _Task(
        _f("moon10hd"), _f("moon10hdc2"),
        "High-dimensional, same structure: four large interaction terms doubled.",
        "Moon high-dimensional quadratic function with its four large interactions "
        "doubled.",
        "Moon high-dimensional quadratic function of twenty inputs.",
    ),
    "lim-pol-to-non": _Task(
        _f("limetal02pol"), _f("limetal02non"),
        "Same shape, different functional family (the designers' own intent).",
        "Lim non-polynomial surface built from a sine and an exponential.",
        "Lim polynomial surface of low order.",
    ),
    "higdon-to-grlee08": _Task(
        _f("hig02"), _f("hig02grlee08"),
        "The second harmonic changes from a sine to a cosine of twice the frequency.",
        "Periodic signal: a slow sine plus a small fast cosine harmonic.",
        "Periodic signal: a slow sine plus a small fast sine harmonic.",
    ),
    "linkletter-simple-to-dec": _Task(
        _f("linketal06simple"), _f("linketal06dec"),
        "Sparse linear family with many inert inputs: adaptation must re-weight the "
        "active inputs.",
        "Linear function of eight inputs with halving weights, two inputs inert.",
        "Linear function of four equally weighted inputs, six inputs inert.",
    ),
    "morris-k2-to-k5": _Task(
        _f("morretal06", k1=2), _f("morretal06", k1=5),
        "More active inputs in the target; high-dimensional and sparse.",
        "Morris screening function with five active interacting inputs of thirty.",
        "Morris screening function with two active interacting inputs of thirty.",
    ),
    "wingweight-lf-to-hf": _Task(
        _f("wingweight", fidelity=3), _f("wingweight"),
        "A published ten-input multi-fidelity pair (Chen et al. 2024): the low fidelity "
        "over-weights the wing area and drops the paint weight, so the map is nearly, "
        "but not exactly, affine.",
        "Weight of a light aircraft wing from ten design inputs: a power law in wing "
        "area, aspect ratio, load factor and gross weight, plus the paint weight.",
        "Weight of a light aircraft wing, coarse model: the structural power law grows "
        "faster with wing area and the paint weight is left out.",
    ),
    "robot-3-to-4-segments": _Task(
        _f("robot", segments=3), _f("robot"),
        "Eight inputs, oscillatory and interacting: a coarse kinematic model that "
        "ignores the arm's last segment, whose angle and length only the target uses.",
        "Distance of a four-segment robot arm's end from its shoulder, depending on "
        "every joint angle and segment length.",
        "Distance of a robot arm's end from its shoulder when only its first three "
        "segments count.",
    ),
    "welch-ben-ari-to-welch": _Task(
        _f("welchetal92", fifth_term=1), _f("welchetal92"),
        "Twenty inputs, few of them active: the source is Ben-Ari & Steinberg (2008)'s "
        "version, whose linear -5 x term reads x1 instead of x19, so the target moves "
        "weight from x1 to x19 and its cubic in x19 turns non-monotonic.",
        "Welch screening function of twenty inputs: a steep cubic in x19 minus a linear "
        "term in x19, a ratio of x12 to x1, a squared difference, and weak linear terms.",
        "Welch screening function of twenty inputs with its linear term moved from x19 "
        "to x1, so that x19 enters as a monotonic cubic.",
    ),
    "moon-hd-to-c3": _Task(
        _f("moon10hd"), _f("moon10hdc3"),
        "High-dimensional, same structure, harder than moon-hd-to-c2: the four large "
        "interaction terms are tripled.",
        "Moon high-dimensional quadratic function with its four large interactions "
        "tripled.",
        "Moon high-dimensional quadratic function of twenty inputs.",
    ),
    "park91b-lf-to-hf": _Task(
        _f("park91blc"), _f("park91b"),
        "Control: the target is an exact affine map of the source.",
        "Park 1991 function two, high fidelity: exponential in x1 plus x2.",
        "Park 1991 function two, low fidelity: an affine rescaling of the response.",
    ),
    "borehole-lf-to-hf": _Task(
        _f("boreholelc"), _f("borehole"),
        "Control: the low fidelity is almost exactly a rescaling (corr 1.0000).",
        "Borehole water flow rate between two aquifers.",
        "Borehole water flow rate, low-fidelity approximation.",
    ),
}

CONTROL_TASKS = ("park91b-lf-to-hf", "borehole-lf-to-hf")


def list_tasks():
    """List the transfer tasks.

    Returns
    -------
    pandas.DataFrame
        One row per task: ``name``, ``source``, ``target``, ``dim``, ``control``
        (True for the sanity-check tasks) and ``why`` it is interesting.
    """
    import pandas as pd

    rows = []
    for name, task in TASKS.items():
        source, target, _, _ = _functions(name)
        rows.append({
            "name": name, "source": source.name, "target": target.name,
            "dim": target.dim, "control": name in CONTROL_TASKS, "why": task.why,
        })
    return pd.DataFrame(rows)


def _on_unit_cube(f: TestFunction) -> TestFunction:
    lo, span = f.bounds[:, 0], f.bounds[:, 1] - f.bounds[:, 0]
    return make(f.name, [[0, 1]] * f.dim, f.description,
                lambda U: f.formula(lo + U * span), f.input_names, **f.params)


@cache
def _functions(name):
    try:
        task = TASKS[name]
    except KeyError:
        raise unknown_name("task", name, TASKS, "list_tasks") from None
    source, target = get_function(task.source[0], **task.source[1]), get_function(
        task.target[0], **task.target[1])
    if task.unit_cube:
        source, target = _on_unit_cube(source), _on_unit_cube(target)
    # Both functions are sampled on their shared box.
    box = np.column_stack([np.maximum(source.bounds[:, 0], target.bounds[:, 0]),
                           np.minimum(source.bounds[:, 1], target.bounds[:, 1])])
    # sd(target) on a fixed, large reference sample: the noise level is a property of
    # the task, the same for every seed and every n_train.
    sd = float(np.std(target(_sample(box, 20000, np.random.default_rng(12345)))))
    return source, target, box, sd


def _sample(box, n, rng):
    return box[:, 0] + rng.random((n, box.shape[0])) * (box[:, 1] - box[:, 0])


def load_task(name, n_source=2000, n_train=100, n_test=2000, noise=0.1,
              random_state=None):
    """Draw the data of a source -> target transfer task.

    Parameters
    ----------
    name : str
        A task from :func:`list_tasks`, e.g. ``"park91a-lf-to-hf"``.
    n_source, n_train, n_test : int
        Rows of plentiful source data, of few noisy target samples, and of the clean
        target test set.
    noise : float
        Noise on the target training labels, as a fraction of sd(target): Gaussian
        with sd ``noise * sd(target)``.
    random_state : int, numpy.random.Generator or None
        The same seed gives the same data.

    Returns
    -------
    sklearn.utils.Bunch
        ``X_source, y_source``, ``X_train, y_train`` (noisy), ``X_test, y_test``
        (noiseless), ``noise_std``, ``target_std``, ``source`` and ``target``
        (function names), ``source_params`` and ``target_params`` (the parameters
        they are built with), ``source_function`` and ``target_function`` (the
        :class:`TestFunction` objects that generated ``y_source`` and ``y_test``, so
        ``target_function(X)`` gives clean targets at any ``X`` in ``bounds``),
        ``description`` and ``source_description`` (plain-English text for the task
        prior), ``bounds`` (the shared box every input is drawn from) and ``name``.

    Raises
    ------
    KeyError
        If ``name`` is not a task; the message suggests the closest names.
    ValueError
        If a row count is not a non-negative integer or ``noise`` is negative.

    Examples
    --------
    >>> from qlsk.simlib import load_task
    >>> task = load_task("ishigami-b-halved", n_train=20, random_state=0)
    >>> task.target, task.target_params
    ('ishigami', {'a': 7.0, 'b': 0.05})
    >>> bool((task.target_function(task.X_test) == task.y_test).all())
    True
    """
    n_source, n_train, n_test = (check_count(n, label) for n, label in (
        (n_source, "n_source"), (n_train, "n_train"), (n_test, "n_test")))
    if not np.isfinite(noise) or noise < 0:
        raise ValueError(f"noise must be a finite number >= 0, got {noise!r}")
    source, target, box, sd = _functions(name)
    task = TASKS[name]
    rng = np.random.default_rng(random_state)
    X_source, X_train, X_test = (_sample(box, n, rng) for n in (n_source, n_train, n_test))
    noise_std = noise * sd
    y_train = target(X_train) + rng.normal(0.0, noise_std, size=n_train)
    return Bunch(
        name=name, X_source=X_source, y_source=source(X_source),
        X_train=X_train, y_train=y_train, X_test=X_test, y_test=target(X_test),
        noise_std=noise_std, target_std=sd, source=source.name, target=target.name,
        source_params=dict(source.params), target_params=dict(target.params),
        source_function=source, target_function=target,
        description=task.description, source_description=task.source_description,
        bounds=box.copy(),
    )
