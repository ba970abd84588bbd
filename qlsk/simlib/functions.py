"""Formulas of the Virtual Library of Simulation Experiments (Surjanovic & Bingham).

Every function is vectorised over rows and registered under its page name. Formulas,
domains and the library's known traps are documented in ``docs/simlib.md``.
"""

from __future__ import annotations

import numpy as np

from ._registry import make, register

PI = np.pi

# ---------------------------------------------------------------- physical models

BOREHOLE_BOUNDS = [
    [0.05, 0.15], [100, 50000], [63070, 115600], [990, 1110],
    [63.1, 116], [700, 820], [1120, 1680], [9855, 12045],
]
BOREHOLE_INPUTS = ("rw", "r", "Tu", "Hu", "Tl", "Hl", "L", "Kw")


def _borehole(X, numerator, offset):
    rw, r, Tu, Hu, Tl, Hl, L, Kw = X.T
    log_ratio = np.log(r / rw)
    return numerator * Tu * (Hu - Hl) / (
        log_ratio * (offset + 2 * L * Tu / (log_ratio * rw**2 * Kw) + Tu / Tl)
    )


@register("borehole", tags=("physical", "emulation"), dim=8)
def borehole(Kw_bounds=(9855, 12045)):
    bounds = [*BOREHOLE_BOUNDS[:7], list(Kw_bounds)]
    return make(
        "borehole", bounds,
        "Water flow rate through a borehole between two aquifers (m^3/yr); smooth, "
        "dominated by the borehole radius, strongly non-linear in log(r/rw).",
        lambda X: _borehole(X, 2 * PI, 1.0), BOREHOLE_INPUTS, Kw_bounds=tuple(Kw_bounds),
    )


@register("boreholelc", tags=("physical", "emulation", "low-fidelity"), dim=8)
def boreholelc():
    return make(
        "boreholelc", BOREHOLE_BOUNDS,
        "Lower-fidelity borehole flow (Xiong et al. 2013); almost exactly a rescaling "
        "of the borehole function.",
        lambda X: _borehole(X, 5.0, 1.5), BOREHOLE_INPUTS,
    )


def _otl(X):
    Rb1, Rb2, Rf, Rc1, Rc2, beta = X.T
    Vb1 = 12 * Rb2 / (Rb1 + Rb2)
    bc = beta * (Rc2 + 9)
    D = bc + Rf
    return (Vb1 + 0.74) * bc / D + 11.35 * Rf / D + 0.74 * Rf * bc / (D * Rc1)


@register("otlcircuit", tags=("physical", "emulation"), dim=6)
def otlcircuit():
    return make(
        "otlcircuit",
        [[50, 150], [25, 70], [0.5, 3], [1.2, 2.5], [0.25, 1.2], [50, 300]],
        "Mid-point voltage of an output transformerless push-pull circuit (V); smooth "
        "and dominated by the two bias resistors.",
        _otl, ("Rb1", "Rb2", "Rf", "Rc1", "Rc2", "beta"),
    )


def _piston(X):
    M, S, V0, k, P0, Ta, T0 = X.T
    A = P0 * S + 19.62 * M - k * V0 / S
    V = S / (2 * k) * (np.sqrt(A**2 + 4 * k * P0 * V0 / T0 * Ta) - A)
    return 2 * PI * np.sqrt(M / (k + S**2 * P0 * V0 / T0 * Ta / V**2))


@register("piston", tags=("physical", "emulation"), dim=7)
def piston():
    return make(
        "piston",
        [[30, 60], [0.005, 0.020], [0.002, 0.010], [1000, 5000], [90000, 110000],
         [290, 296], [340, 360]],
        "Cycle time of a piston within a cylinder (s); non-linear, driven mostly by "
        "the piston surface area and the initial gas volume.",
        _piston, ("M", "S", "V0", "k", "P0", "Ta", "T0"),
    )


@register("robot", tags=("physical", "emulation"), dim=8)
def robot(segments=4):
    if segments not in (1, 2, 3, 4):
        raise ValueError(f"robot: segments must be 1..4, got {segments!r}")

    def formula(X):
        # A coarser model keeps the first segments; the others' angles and lengths
        # stay inputs but are inert.
        theta, L = X[:, :segments], X[:, 4:4 + segments]
        angles = np.cumsum(theta, axis=1)
        u = (L * np.cos(angles)).sum(axis=1)
        v = (L * np.sin(angles)).sum(axis=1)
        return np.sqrt(u**2 + v**2)

    return make(
        "robot", [[0, 2 * PI]] * 4 + [[0, 1]] * 4,
        "Distance of a four-segment robot arm's end from its shoulder; oscillatory "
        "in the joint angles, with strong interactions.",
        formula, ("theta1", "theta2", "theta3", "theta4", "L1", "L2", "L3", "L4"),
        segments=segments,
    )


# Chen et al. (2024)'s low fidelities of the wing weight, as in botorch's
# WingWeightMultiFidelity: (exponent of S_w, paint weight as a function of S_w and W_p).
# Fidelity 0 is the library's function.
_WING_FIDELITIES = {
    0: (0.758, lambda Sw, Wp: Sw * Wp),
    1: (0.758, lambda Sw, Wp: Wp),
    2: (0.8, lambda Sw, Wp: Wp),
    3: (0.9, lambda Sw, Wp: 0.0),
}


@register("wingweight", tags=("physical", "emulation"), dim=10)
def wingweight(fidelity=0):
    try:
        exponent, paint = _WING_FIDELITIES[fidelity]
    except KeyError:
        raise ValueError(f"wingweight: fidelity must be 0..3, got {fidelity!r}") from None

    def formula(X):
        Sw, Wfw, A, Lam, q, lam, tc, Nz, Wdg, Wp = X.T
        Lam = np.deg2rad(Lam)
        structure = (
            0.036 * Sw**exponent * Wfw**0.0035 * (A / np.cos(Lam) ** 2) ** 0.6 * q**0.006
            * lam**0.04 * (100 * tc / np.cos(Lam)) ** -0.3 * (Nz * Wdg) ** 0.49
        )
        return structure + paint(Sw, Wp)

    return make(
        "wingweight",
        [[150, 200], [220, 300], [6, 10], [-10, 10], [16, 45], [0.5, 1], [0.08, 0.18],
         [2.5, 6], [1700, 2500], [0.025, 0.08]],
        "Weight of a light aircraft wing (lb); smooth, nearly additive power law.",
        formula, ("Sw", "Wfw", "A", "Lambda", "q", "lambda", "tc", "Nz", "Wdg", "Wp"),
        fidelity=fidelity,
    )


# ------------------------------------------------------------- other emulation

@register("fried", tags=("emulation",), dim=5)
def fried(coefficients=(10.0, 20.0, 10.0, 5.0), frequency=1.0):
    a, b, c, d = coefficients

    def formula(X):
        x1, x2, x3, x4, x5 = X.T
        return a * np.sin(frequency * PI * x1 * x2) + b * (x3 - 0.5) ** 2 + c * x4 + d * x5

    return make(
        "fried", [[0, 1]] * 5,
        "Friedman's benchmark: a sine interaction, a quadratic and two linear terms; "
        "non-linear and non-additive.",
        formula, coefficients=tuple(coefficients), frequency=frequency,
    )


def _currin(x1, x2):
    with np.errstate(divide="ignore"):
        factor = np.where(x2 > 0, 1 - np.exp(-1 / (2 * np.where(x2 > 0, x2, 1))), 1.0)
    poly = (2300 * x1**3 + 1900 * x1**2 + 2092 * x1 + 60) / (
        100 * x1**3 + 500 * x1**2 + 4 * x1 + 20
    )
    return factor * poly


@register("curretal88exp", tags=("emulation", "multi-fidelity"), dim=2)
def curretal88exp():
    return make(
        "curretal88exp", [[0, 1], [0, 1]],
        "Currin et al. (1988) exponential function; smooth, steep near x2 = 0.",
        lambda X: _currin(X[:, 0], X[:, 1]),
    )


@register("curretal88explc", tags=("emulation", "multi-fidelity", "low-fidelity"), dim=2)
def curretal88explc():
    h = 1 / 20

    def formula(X):
        x1, x2 = X.T
        lo = np.maximum(0, x2 - h)
        return 0.25 * (
            _currin(x1 + h, x2 + h) + _currin(x1 + h, lo)
            + _currin(x1 - h, x2 + h) + _currin(x1 - h, lo)
        )

    return make(
        "curretal88explc", [[0, 1], [0, 1]],
        "Lower-fidelity Currin exponential function: a local average of four shifted "
        "copies (Xiong et al. 2013).",
        formula,
    )


def _park91a(X):
    x1, x2, x3, x4 = X.T
    c = (x2 + x3**2) * x4
    # (x1/2)(sqrt(1 + c/x1^2) - 1), rewritten to stay finite at x1 = 0 (its limit).
    denom = 2 * (np.sqrt(x1**2 + c) + x1)
    with np.errstate(invalid="ignore", divide="ignore"):
        first = np.where(denom > 0, c / np.where(denom > 0, denom, 1), 0.0)
    return first + (x1 + 3 * x4) * np.exp(1 + np.sin(x3))


@register("park91a", tags=("emulation", "multi-fidelity"), dim=4)
def park91a():
    return make(
        "park91a", [[0, 1]] * 4,
        "Park (1991) function 1; non-linear with an exponential-sine term in x3.",
        _park91a,
    )


@register("park91alc", tags=("emulation", "multi-fidelity", "low-fidelity"), dim=4)
def park91alc():
    def formula(X):
        x1, x2, x3, _ = X.T
        return (1 + np.sin(x1) / 10) * _park91a(X) - 2 * x1 + x2**2 + x3**2 + 0.5

    return make(
        "park91alc", [[0, 1]] * 4,
        "Lower-fidelity Park (1991) function 1: a multiplicative and additive "
        "non-linear distortion of park91a (Xiong et al. 2013).",
        formula,
    )


def _park91b(X):
    x1, x2, x3, x4 = X.T
    return 2 / 3 * np.exp(x1 + x2) - x4 * np.sin(x3) + x3


@register("park91b", tags=("emulation", "multi-fidelity"), dim=4)
def park91b():
    return make(
        "park91b", [[0, 1]] * 4,
        "Park (1991) function 2; smooth, exponential in x1 + x2.", _park91b,
    )


@register("park91blc", tags=("emulation", "multi-fidelity", "low-fidelity"), dim=4)
def park91blc():
    return make(
        "park91blc", [[0, 1]] * 4,
        "Lower-fidelity Park (1991) function 2: exactly 1.2 * park91b - 1.",
        lambda X: 1.2 * _park91b(X) - 1,
    )


def _forrester(x):
    return (6 * x - 2) ** 2 * np.sin(12 * x - 4)


@register("forretal08", tags=("emulation", "multi-fidelity", "optimization"), dim=1)
def forretal08():
    return make(
        "forretal08", [[0, 1]],
        "Forrester et al. (2008) one-dimensional function; oscillating with growing "
        "amplitude, minimum -6.02 near x = 0.757.",
        lambda X: _forrester(X[:, 0]),
    )


@register("forretal08lc", tags=("emulation", "multi-fidelity", "low-fidelity"), dim=1)
def forretal08lc(A=0.5, B=10.0, C=-5.0):
    return make(
        "forretal08lc", [[0, 1]],
        "Lower-fidelity Forrester function A f(x) + B (x - 0.5) - C; a large, "
        "structured discrepancy from the high-fidelity function.",
        lambda X: A * _forrester(X[:, 0]) + B * (X[:, 0] - 0.5) - C, A=A, B=B, C=C,
    )


@register("grlee08", tags=("emulation",), dim=2)
def grlee08():
    return make(
        "grlee08", [[-2, 6], [-2, 6]],
        "Gramacy & Lee (2008); a bump and a dip near the origin, flat elsewhere.",
        lambda X: X[:, 0] * np.exp(-X[:, 0] ** 2 - X[:, 1] ** 2),
    )


@register("grlee09", tags=("emulation",), dim=6)
def grlee09():
    def formula(X):
        x1, x2, x3, x4 = X[:, :4].T
        return np.exp(np.sin((0.9 * (x1 + 0.48)) ** 10)) + x2 * x3 + x4

    return make(
        "grlee09", [[0, 1]] * 6,
        "Gramacy & Lee (2009); a sharp non-linearity in x1, an interaction, a linear "
        "term, and two inert inputs.",
        formula,
    )


@register("grlee12", tags=("emulation", "optimization"), dim=1)
def grlee12():
    return make(
        "grlee12", [[0.5, 2.5]],
        "Gramacy & Lee (2012); a fast oscillation damped by 1/x plus a quartic trend, "
        "minimum -0.869 near x = 0.549.",
        lambda X: np.sin(10 * PI * X[:, 0]) / (2 * X[:, 0]) + (X[:, 0] - 1) ** 4,
    )


@register("hig02", tags=("emulation",), dim=1)
def hig02():
    return make(
        "hig02", [[0, 10]],
        "Higdon (2002); a sine wave with a smaller, faster sine harmonic.",
        lambda X: np.sin(2 * PI * X[:, 0] / 10) + 0.2 * np.sin(2 * PI * X[:, 0] / 2.5),
    )


@register("hig02grlee08", tags=("emulation",), dim=1)
def hig02grlee08():
    def formula(X):
        x = X[:, 0]
        return np.where(x < 10, np.sin(PI * x / 5) + 0.2 * np.cos(4 * PI * x / 5),
                        x / 10 - 1)

    return make(
        "hig02grlee08", [[0, 20]],
        "Higdon (2002) and Gramacy & Lee (2008); a periodic regime below x = 10 and a "
        "linear one above, with a jump between.",
        formula,
    )


@register("franke2d", tags=("emulation",), dim=2)
def franke2d():
    def formula(X):
        x, y = 9 * X[:, 0], 9 * X[:, 1]
        return (
            0.75 * np.exp(-((x - 2) ** 2) / 4 - (y - 2) ** 2 / 4)
            + 0.75 * np.exp(-((x + 1) ** 2) / 49 - (y + 1) / 10)
            + 0.5 * np.exp(-((x - 7) ** 2) / 4 - (y - 3) ** 2 / 4)
            - 0.2 * np.exp(-((x - 4) ** 2) - (y - 7) ** 2)
        )

    return make(
        "franke2d", [[0, 1], [0, 1]],
        "Franke's function; two Gaussian peaks and a dip on a sloping background.",
        formula,
    )


def _detpep_curved(x1, x2, x3):
    return (
        4 * (x1 - 2 + 8 * x2 - 8 * x2**2) ** 2 + (3 - 4 * x2) ** 2
        + 16 * np.sqrt(x3 + 1) * (2 * x3 - 1) ** 2
    )


@register("detpep10curv", tags=("emulation",), dim=3)
def detpep10curv():
    return make(
        "detpep10curv", [[0, 1]] * 3,
        "Dette & Pepelyshev (2010) curved function; strongly curved in x2, with "
        "curvature in x3.",
        lambda X: _detpep_curved(*X.T),
    )


@register("detpep10exp", tags=("emulation",), dim=3)
def detpep10exp():
    def formula(X):
        x1, x2, x3 = X.T
        with np.errstate(divide="ignore"):
            return 100 * (np.exp(-2 / x1**1.75) + np.exp(-2 / x2**1.5)
                          + np.exp(-2 / x3**1.25))

    return make(
        "detpep10exp", [[0, 1]] * 3,
        "Dette & Pepelyshev (2010) exponential function; flat near zero and rising "
        "steeply, additive.",
        formula,
    )


@register("detpep108d", tags=("emulation",), dim=8)
def detpep108d():
    def formula(X):
        cumulative = np.cumsum(X[:, 2:], axis=1)  # sum_{j=3}^{i} x_j for i = 3..8
        weights = np.arange(4, 9)
        return _detpep_curved(*X[:, :3].T) + (weights * np.log1p(cumulative[:, 1:])).sum(1)

    return make(
        "detpep108d", [[0, 1]] * 8,
        "Dette & Pepelyshev (2010) 8-D function; the curved function plus slowly "
        "growing logarithmic terms in the other inputs.",
        formula,
    )


@register("limetal02pol", tags=("emulation",), dim=2)
def limetal02pol():
    def formula(X):
        x1, x2 = X.T
        return (9 + 2.5 * x1 - 17.5 * x2 + 2.5 * x1 * x2 + 19 * x2**2 - 7.5 * x1**3
                - 2.5 * x1 * x2**2 - 5.5 * x2**4 + x1**3 * x2**2)

    return make(
        "limetal02pol", [[0, 1], [0, 1]],
        "Lim et al. (2002) polynomial; a smooth low-order polynomial surface.", formula,
    )


@register("limetal02non", tags=("emulation",), dim=2)
def limetal02non():
    def formula(X):
        x1, x2 = X.T
        return ((30 + 5 * x1 * np.sin(5 * x1)) * (4 + np.exp(-5 * x2)) - 100) / 6

    return make(
        "limetal02non", [[0, 1], [0, 1]],
        "Lim et al. (2002) non-polynomial; the same shape as limetal02pol from a "
        "sine and an exponential.",
        formula,
    )


# ------------------------------------------------- sensitivity, screening, UQ

@register("ishigami", tags=("sensitivity", "uq"), dim=3)
def ishigami(a=7.0, b=0.1):
    def formula(X):
        x1, x2, x3 = X.T
        return np.sin(x1) + a * np.sin(x2) ** 2 + b * x3**4 * np.sin(x1)

    return make(
        "ishigami", [[-PI, PI]] * 3,
        "Ishigami function; strongly non-linear and non-monotonic, with an x1-x3 "
        "interaction whose strength is b.",
        formula, a=a, b=b,
    )


@register("gfunc", tags=("sensitivity", "integration"), dim=8)
def gfunc(a=None, dim=None):
    if a is None:
        dim = 8 if dim is None else dim
        a = (np.arange(1, dim + 1) - 1) / 2
    a = np.asarray(a, dtype=float)
    if dim is not None and dim != a.size:
        raise ValueError(f"gfunc: a has {a.size} entries but dim={dim}")

    return make(
        "gfunc", [[0, 1]] * a.size,
        "Sobol' G-function; a product of kinked terms whose importance falls as a_i "
        "grows.",
        lambda X: np.prod((np.abs(4 * X - 2) + a) / (1 + a), axis=1), a=a.tolist(),
    )


@register("welchetal92", tags=("screening", "sensitivity"), dim=20)
def welchetal92(fifth_term=19):
    if fifth_term not in range(1, 21):
        raise ValueError(f"welchetal92: fifth_term must be an input 1..20, got "
                         f"{fifth_term!r}")

    def formula(X):
        x = {i + 1: X[:, i] for i in range(20)}
        return (
            5 * x[12] / (1 + x[1]) + 5 * (x[4] - x[20]) ** 2 + x[5] + 40 * x[19] ** 3
            - 5 * x[fifth_term] + 0.05 * x[2] + 0.08 * x[3] - 0.03 * x[6] + 0.03 * x[7]
            - 0.09 * x[9] - 0.01 * x[10] - 0.07 * x[11] + 0.25 * x[13] ** 2
            - 0.04 * x[14] + 0.06 * x[15] - 0.01 * x[17] - 0.03 * x[18]
        )

    return make(
        "welchetal92", [[-0.5, 0.5]] * 20,
        "Welch et al. (1992) screening function; a few strong, partly interacting "
        "inputs among 20, some inert.",
        formula, fifth_term=fifth_term,
    )


@register("morretal06", tags=("screening",), dim=30)
def morretal06(k1=2):
    if not 2 <= k1 <= 10:
        raise ValueError(f"morretal06: k1 must be in 2..10, got {k1}")
    alpha = np.sqrt(12) - 6 * np.sqrt(0.1) * np.sqrt(k1 - 1)
    beta = 12 * np.sqrt(0.1) / np.sqrt(k1 - 1)

    def formula(X):
        active = X[:, :k1]
        s = active.sum(axis=1)
        pairs = (s**2 - (active**2).sum(axis=1)) / 2  # sum_{i<j} x_i x_j
        return alpha * s + beta * pairs

    return make(
        "morretal06", [[0, 1]] * 30,
        "Morris et al. (2006); the first k1 of 30 inputs are active, linearly and in "
        "pairwise products, the rest inert.",
        formula, k1=k1,
    )


def _linkletter(name, description, formula):
    @register(name, tags=("screening",), dim=10)
    def factory():
        return make(name, [[0, 1]] * 10, description, formula)

    return factory


_linkletter(
    "linketal06simple",
    "Linkletter et al. (2006) simple linear function; four equally active inputs, six "
    "inert.",
    lambda X: 0.2 * X[:, :4].sum(axis=1),
)
_linkletter(
    "linketal06dec",
    "Linkletter et al. (2006) decreasing coefficients; eight inputs with halving "
    "linear weights, two inert.",
    lambda X: X[:, :8] @ (0.2 / 2.0 ** np.arange(8)),
)
_linkletter(
    "linketal06sin",
    "Linkletter et al. (2006) sinusoidal function; two active inputs, one oscillating "
    "fast, eight inert.",
    lambda X: np.sin(X[:, 0]) + np.sin(5 * X[:, 1]),
)


@register("loepetal13", tags=("screening", "emulation"), dim=10)
def loepetal13():
    def formula(X):
        x1, x2, x3, x4, x5, x6, x7 = X[:, :7].T
        return (6 * x1 + 4 * x2 + 5.5 * x3 + 3 * x1 * x2 + 2.2 * x1 * x3 + 1.4 * x2 * x3
                + x4 + 0.5 * x5 + 0.2 * x6 + 0.1 * x7)

    return make(
        "loepetal13", [[0, 1]] * 10,
        "Loeppky et al. (2013); three strong interacting inputs, four weak ones and "
        "three inert.",
        formula,
    )


@register("moon10low", tags=("screening",), dim=3)
def moon10low():
    return make(
        "moon10low", [[0, 1]] * 3,
        "Moon (2010) low-dimensional function; linear terms and one interaction.",
        lambda X: X[:, 0] + X[:, 1] + 3 * X[:, 0] * X[:, 2],
    )


# Moon (2010) 20-D coefficients: linear terms and the lower triangle of the quadratic
# terms, stored column by column (column j holds c_ij for i = j..20), as in the library.
_MOON_LINEAR = np.array([
    -2.08, 2.11, 0.76, -0.57, -0.72, -0.47, 0.39, 1.40, -0.09, -0.70,
    -1.27, -1.03, 1.07, 2.23, 2.46, -1.31, -2.94, 2.63, 0.07, 2.44,
])
_MOON_COLUMNS = [
    [1.42, 2.18, 0.58, -1.21, -7.15, -1.29, -0.19, -2.75, -1.16, -1.09, 0.89, -0.16,
     4.43, 1.65, -1.25, -1.35, 1.15, -19.71, 23.72, 1.42],
    [-1.70, 0.84, 1.20, -2.35, -0.16, -0.19, -5.93, -1.15, 1.89, -3.47, -0.07, -0.60,
     -1.09, -3.23, 0.44, 1.24, 2.13, -0.71, 1.64],
    [1.00, -0.49, 1.74, 1.29, -0.35, -4.73, 3.27, 1.87, 1.42, -0.96, -0.91, 2.06, 2.89,
     0.25, 1.97, 3.04, 2.00, 1.64],
    [-3.23, 2.75, -1.40, 0.24, -0.70, -0.17, -3.38, -1.87, -0.17, 1.56, 2.40, -1.70,
     0.32, 2.11, -0.20, 1.39, -2.01],
    [-1.10, 2.34, -3.90, -0.80, 0.13, -3.97, 1.99, 0.45, 1.77, -0.50, 1.86, 0.02, -2.08,
     -1.78, 1.76, 1.30],
    [0.21, -0.03, -0.37, -1.27, 2.78, 1.37, -2.75, -3.15, 1.86, 0.12, -0.74, 1.06, -3.76,
     -0.43, 1.25],
    [-4.16, 0.26, -0.30, -2.69, -2.56, 28.99, -2.13, 1.36, 1.45, 3.09, -1.73, -1.66,
     -3.94, -2.56],
    [-1.00, 0.77, 1.09, -1.15, -1.09, -2.74, 1.59, 1.41, 0.48, 2.16, 0.34, 4.17, 0.73],
    [3.06, 2.46, 5.80, -5.15, -2.05, 3.17, 3.40, -0.49, -6.71, -0.74, 2.78, -0.41],
    [3.34, 2.36, -1.77, -3.16, 1.89, 2.20, -0.71, -3.78, 0.98, 1.40, -0.59],
    [-1.17, -2.45, 6.04, 3.22, 0.19, -0.03, -2.65, -1.02, -1.96, -2.66],
    [1.52, 1.36, -0.59, -1.05, -0.84, -1.30, 0.42, 1.86, -0.32],
    [0.42, -0.50, 0.21, -0.18, 3.04, -0.53, -0.12, 0.09],
    [-1.13, -2.42, -3.93, -2.30, 0.40, 0.81, -1.10],
    [-0.26, 5.31, 1.66, -3.10, 3.37, 4.32],
    [-2.26, 0.00, -0.77, -3.90, -1.08],
    [0.62, -1.06, -0.86, 0.44],
    [0.35, -1.99, 1.50],
    [-13.34, 1.34],
    [-0.38],
]
# (i, j) pairs, 1-based, of the four large quadratic terms that C-1..C-3 keep or scale.
_MOON_LARGE = [(18, 1), (19, 1), (12, 7), (19, 19)]


def _moon_quadratic():
    Q = np.zeros((20, 20))
    for j, column in enumerate(_MOON_COLUMNS):
        Q[j:, j] = column
    return Q


def _moon(name, factor, only_large, description):
    @register(name, tags=("screening", "emulation"), dim=20)
    def factory():
        Q = _moon_quadratic()
        linear = _MOON_LINEAR.copy()
        if only_large:
            keep = np.zeros_like(Q)
            for i, j in _MOON_LARGE:
                keep[i - 1, j - 1] = Q[i - 1, j - 1]
            Q, linear = keep, np.zeros(20)
        for i, j in _MOON_LARGE:
            Q[i - 1, j - 1] *= factor
        return make(name, [[0, 1]] * 20, description,
                    lambda X: X @ linear + np.einsum("ni,ij,nj->n", X, Q, X))

    return factory


_moon("moon10hd", 1, False,
      "Moon (2010) high-dimensional function; 20 inputs with 20 linear and 210 "
      "quadratic terms, four of them large.")
_moon("moon10hdc1", 1, True,
      "Moon (2010) C-1; only the four large quadratic terms of moon10hd.")
_moon("moon10hdc2", 2, False,
      "Moon (2010) C-2; moon10hd with its four large quadratic terms doubled.")
_moon("moon10hdc3", 3, False,
      "Moon (2010) C-3; moon10hd with its four large quadratic terms tripled.")


@register("bratleyetal92", tags=("integration", "sensitivity"), dim=6)
def bratleyetal92(dim=6):
    signs = (-1.0) ** np.arange(1, dim + 1)
    return make(
        "bratleyetal92", [[0, 1]] * dim,
        "Bratley et al. (1992); an alternating sum of growing products, dominated by "
        "the first inputs.",
        lambda X: np.cumprod(X, axis=1) @ signs, dim=dim,
    )


@register("roosarn63", tags=("integration", "sensitivity"), dim=6)
def roosarn63(dim=6):
    return make(
        "roosarn63", [[0, 1]] * dim,
        "Roos & Arnold (1963); a product of kinked |4x - 2| terms, every input "
        "equally important and interacting.",
        lambda X: np.prod(np.abs(4 * X - 2), axis=1), dim=dim,
    )


# ---------------------------------------------------------------- optimization

@register("branin", tags=("optimization",), dim=2)
def branin():
    a, b, c, r, s, t = 1, 5.1 / (4 * PI**2), 5 / PI, 6, 10, 1 / (8 * PI)

    def formula(X):
        x1, x2 = X.T
        return a * (x2 - b * x1**2 + c * x1 - r) ** 2 + s * (1 - t) * np.cos(x1) + s

    return make(
        "branin", [[-5, 10], [0, 15]],
        "Branin-Hoo function; a curved valley holding three global minima of "
        "0.397887.",
        formula,
    )


_HART_ALPHA = np.array([1.0, 1.2, 3.0, 3.2])
_HART3_A = np.array([[3, 10, 30], [0.1, 10, 35], [3, 10, 30], [0.1, 10, 35]])
_HART3_P = 1e-4 * np.array(
    [[3689, 1170, 2673], [4699, 4387, 7470], [1091, 8732, 5547], [381, 5743, 8828]]
)
_HART6_A = np.array([
    [10, 3, 17, 3.5, 1.7, 8], [0.05, 10, 17, 0.1, 8, 14],
    [3, 3.5, 1.7, 10, 17, 8], [17, 8, 0.05, 10, 0.1, 14],
])
_HART6_P = 1e-4 * np.array([
    [1312, 1696, 5569, 124, 8283, 5886], [2329, 4135, 8307, 3736, 1004, 9991],
    [2348, 1451, 3522, 2883, 3047, 6650], [4047, 8828, 8732, 5743, 1091, 381],
])


def _hartmann(A, P):
    def formula(X):
        # (n, 4): the exponent of every bump at every row
        inner = (A[None] * (X[:, None, :] - P[None]) ** 2).sum(axis=2)
        return -(np.exp(-inner) @ _HART_ALPHA)

    return formula


@register("hart3", tags=("optimization",), dim=3)
def hart3():
    return make(
        "hart3", [[0, 1]] * 3,
        "Hartmann 3-D function; four Gaussian wells, global minimum -3.86278.",
        _hartmann(_HART3_A, _HART3_P),
    )


@register("hart6", tags=("optimization",), dim=6)
def hart6():
    return make(
        "hart6", [[0, 1]] * 6,
        "Hartmann 6-D function (plain, unscaled); four Gaussian wells, global minimum "
        "-3.32237.",
        _hartmann(_HART6_A, _HART6_P),
    )


@register("michal", tags=("optimization",), dim=2)
def michal(dim=2, m=10):
    i = np.arange(1, dim + 1)
    return make(
        "michal", [[0, PI]] * dim,
        "Michalewicz function; steep narrow valleys on a mostly flat plateau, "
        "steeper as m grows.",
        lambda X: -(np.sin(X) * np.sin(i * X**2 / PI) ** (2 * m)).sum(axis=1),
        dim=dim, m=m,
    )


@register("rosen", tags=("optimization",), dim=4)
def rosen(dim=4):
    def formula(X):
        return (100 * (X[:, 1:] - X[:, :-1] ** 2) ** 2 + (X[:, :-1] - 1) ** 2).sum(axis=1)

    return make(
        "rosen", [[-5, 10]] * dim,
        "Rosenbrock function; a long curved valley, output spanning five decades.",
        formula, dim=dim,
    )


@register("ackley", tags=("optimization",), dim=5)
def ackley(dim=5, a=20.0, b=0.2, c=2 * PI):
    def formula(X):
        return (-a * np.exp(-b * np.sqrt((X**2).mean(axis=1)))
                - np.exp(np.cos(c * X).mean(axis=1)) + a + np.e)

    return make(
        "ackley", [[-32.768, 32.768]] * dim,
        "Ackley function; many local minima on a nearly flat outer region, global "
        "minimum 0 at the origin.",
        formula, dim=dim, a=a, b=b, c=c,
    )
