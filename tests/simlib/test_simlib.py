"""The simulation library against independent values: analytic moments, known optima,
and uqtestfuns 0.7.0 where it agrees with the library."""

import numpy as np
import pytest
import uqtestfuns as uqtf

from qlsk.simlib import get_function, list_functions, list_tasks, load_task

REQUIRED = """borehole boreholelc otlcircuit piston robot wingweight fried curretal88exp
curretal88explc park91a park91alc park91b park91blc forretal08 forretal08lc ishigami
gfunc limetal02pol limetal02non hig02 hig02grlee08 grlee08 grlee09 grlee12 franke2d
detpep10curv detpep10exp detpep108d welchetal92 morretal06 linketal06simple linketal06dec
linketal06sin loepetal13 moon10low bratleyetal92 roosarn63 branin hart3 hart6 michal rosen
ackley""".split()


def test_every_required_function_is_registered_with_metadata():
    table = list_functions()
    assert set(REQUIRED) <= set(table["name"])
    for name in table["name"]:
        f = get_function(name)
        assert f.name == name
        assert f.bounds.shape == (f.dim, 2) and (f.bounds[:, 0] < f.bounds[:, 1]).all()
        assert len(f.input_names) == f.dim
        assert f.description.endswith(".") and len(f.description.split()) >= 6
        X = f.sample(50, random_state=0)
        assert X.shape == (50, f.dim)
        assert ((X >= f.bounds[:, 0]) & (X <= f.bounds[:, 1])).all()
        y = f(X)
        assert y.shape == (50,) and np.isfinite(y).all()


# (our name, our params, uqtestfuns factory, columns of our X in uqtestfuns' order)
UQTF_CASES = [
    ("borehole", {}, lambda: uqtf.Borehole(), None),
    ("otlcircuit", {}, lambda: uqtf.OTLCircuit(), None),
    ("piston", {}, lambda: uqtf.Piston(), None),
    ("robot", {}, lambda: uqtf.RobotArm(), [4, 5, 6, 7, 0, 1, 2, 3]),
    ("wingweight", {}, lambda: uqtf.WingWeight(), None),
    ("ishigami", {}, lambda: uqtf.Ishigami(), None),
    ("ishigami", {"b": 0.05}, lambda: uqtf.Ishigami(parameters_id="Sobol1999"), None),
    ("gfunc", {}, lambda: uqtf.SobolG(8), None),
    ("welchetal92", {}, lambda: uqtf.Welch20D(), None),
    ("limetal02pol", {}, lambda: uqtf.LimPoly(), None),
    ("limetal02non", {}, lambda: uqtf.LimNonPoly(), None),
    ("bratleyetal92", {}, lambda: uqtf.BratleyD(6), None),
    ("roosarn63", {}, lambda: uqtf.BratleyA(6), None),
    ("linketal06simple", {}, lambda: uqtf.LinkletterLinear(), None),
    ("linketal06dec", {}, lambda: uqtf.LinkletterDecCoeffs(), None),
    ("linketal06sin", {}, lambda: uqtf.LinkletterSine(), None),
    ("moon10low", {}, lambda: uqtf.Moon3D(), None),
    ("forretal08", {}, lambda: uqtf.Forrester1D(), None),
    ("detpep10exp", {}, lambda: uqtf.DetteExp(), None),
]


@pytest.mark.parametrize("name, params, factory, order", UQTF_CASES,
                         ids=[f"{c[0]}{c[1] or ''}" for c in UQTF_CASES])
def test_matches_uqtestfuns(name, params, factory, order):
    ours, theirs = get_function(name, **params), factory()
    perm = np.arange(ours.dim) if order is None else np.asarray(order)
    lo, hi = ours.bounds[perm, 0].copy(), ours.bounds[perm, 1].copy()
    for i, marginal in enumerate(theirs.prob_input.marginals):
        lo[i], hi[i] = max(lo[i], marginal.lower), min(hi[i], marginal.upper)
    U = lo + np.random.default_rng(1).random((300, ours.dim)) * (hi - lo)
    X = np.empty_like(U)
    X[:, perm] = U
    np.testing.assert_allclose(ours(X), theirs(U), rtol=1e-12, atol=1e-12)


def test_friedman_and_morris_match_uqtestfuns_with_their_extra_inputs():
    X = np.random.default_rng(2).random((300, 5))
    theirs = uqtf.Friedman6D()(np.column_stack([X, np.zeros(300)]))
    np.testing.assert_allclose(get_function("fried")(X), theirs, rtol=1e-12)
    X = np.random.default_rng(3).random((300, 30))
    morris = uqtf.MorrisM(30, parameters=uqtf.MorrisM(30).parameters.copy())
    morris.parameters["p"] = 5
    np.testing.assert_allclose(get_function("morretal06", k1=5)(X), morris(X), rtol=1e-12)


def test_analytic_moments():
    X = get_function("ishigami").sample(400_000, random_state=0)
    y = get_function("ishigami")(X)
    a, b = 7.0, 0.1
    var = a**2 / 8 + b * np.pi**4 / 5 + b**2 * np.pi**8 / 18 + 0.5
    assert abs(y.mean() - a / 2) < 0.03 and abs(y.var() / var - 1) < 0.01
    g = get_function("gfunc")
    y = g(g.sample(400_000, random_state=0))
    aa = (np.arange(1, 9) - 1) / 2
    var = np.prod(1 + 1 / (3 * (1 + aa) ** 2)) - 1
    assert abs(y.mean() - 1) < 0.01 and abs(y.var() / var - 1) < 0.02


@pytest.mark.parametrize("name, x, value", [
    ("branin", [-np.pi, 12.275], 0.397887),
    ("branin", [np.pi, 2.275], 0.397887),
    ("branin", [9.42478, 2.475], 0.397887),
    ("hart3", [0.114614, 0.555649, 0.852547], -3.86278),
    ("hart6", [0.20169, 0.150011, 0.476874, 0.275332, 0.311652, 0.6573], -3.32237),
    ("forretal08", [0.757249], -6.02074),
    ("grlee12", [0.548563], -0.869011),
    ("michal", [2.20, 1.57], -1.8013),
    ("rosen", [1, 1, 1, 1], 0.0),
    ("ackley", [0, 0, 0, 0, 0], 0.0),
])
def test_known_optima(name, x, value):
    assert get_function(name)(np.array([x]))[0] == pytest.approx(value, abs=2e-4)


def test_known_optima_are_minima_on_a_grid():
    f = get_function("forretal08")
    assert f(np.linspace(0, 1, 10001)).min() == pytest.approx(-6.02074, abs=1e-4)
    assert get_function("michal", dim=5)(np.array([[2.202906, 1.570796, 1.284992,
                                                    1.923058, 1.720470]]))[0] == \
        pytest.approx(-4.687658, abs=1e-5)


def test_library_traps():
    # The low fidelities are the library's, not the other implementations'.
    x = np.array([[0.3]])
    hf = get_function("forretal08")(x)[0]
    assert get_function("forretal08lc")(x)[0] == pytest.approx(0.5 * hf + 10 * (0.3 - 0.5) + 5)
    X = get_function("park91b").sample(20, random_state=0)
    np.testing.assert_allclose(get_function("park91blc")(X),
                               1.2 * get_function("park91b")(X) - 1)
    # Park91a is finite at x1 = 0 (its limit), Currin at x2 = 0, Dette exp at 0.
    assert np.isfinite(get_function("park91a")(np.array([[0.0, 0.5, 0.5, 0.5]]))).all()
    assert np.isfinite(get_function("curretal88exp")(np.array([[0.5, 0.0]]))).all()
    assert get_function("detpep10exp")(np.zeros((1, 3)))[0] == 0.0
    # Franke uses the linear (Y + 1) / 10 term; hig02grlee08 breaks at x = 10.
    f = get_function("franke2d")(np.array([[0.0, 0.0]]))[0]
    expected = (0.75 * np.exp(-2) + 0.75 * np.exp(-1 / 49 - 0.1) + 0.5 * np.exp(-49 / 4 - 9 / 4)
                - 0.2 * np.exp(-16 - 49))
    assert f == pytest.approx(expected)
    assert get_function("hig02grlee08")(np.array([[9.8]]))[0] == pytest.approx(
        np.sin(np.pi * 9.8 / 5) + 0.2 * np.cos(4 * np.pi * 9.8 / 5))
    # Sobol' G's default a_i = (i - 1) / 2; plain Hartmann 6-D.
    assert get_function("gfunc").params["a"] == [0, 0.5, 1, 1.5, 2, 2.5, 3, 3.5]
    # Robot arm reads angles first, lengths second.
    assert get_function("robot")(np.array([[0, 0, 0, 0, 1, 1, 1, 1]]))[0] == pytest.approx(4)


def test_moon_variants_scale_the_large_terms():
    X = np.random.default_rng(0).random((200, 20))
    hd, c1, c2 = (get_function(n)(X) for n in ("moon10hd", "moon10hdc1", "moon10hdc2"))
    np.testing.assert_allclose(c2 - hd, c1, atol=1e-10)
    assert abs(np.std(get_function("moon10hdc2")(np.random.default_rng(1).random(
        (100_000, 20)))) - 14.05) < 0.2


@pytest.mark.parametrize("bad, message", [
    (np.zeros((3, 5)), r"borehole: expected an array of shape \(n, 8\)"),
    (np.full((2, 8), np.nan), r"borehole: non-finite value in column 0 \(rw\)"),
    (np.array([[0.1, 100, 63070, 990, 63.1, 700, 1120, 20000.0]]),
     r"borehole: column 7 \(Kw\) has values outside its domain"),
    ([["a"] * 8], "borehole: input is not numeric"),
])
def test_bad_input_raises_naming_function_and_column(bad, message):
    with pytest.raises(ValueError, match=message):
        get_function("borehole")(bad)


def test_parameters_and_unknown_names():
    assert get_function("gfunc", dim=4).dim == 4
    assert get_function("rosen", dim=3).dim == 3
    assert get_function("ishigami", a=5, b=0.2).params == {"a": 5, "b": 0.2}
    with pytest.raises(KeyError, match="unknown function"):
        get_function("nope")
    with pytest.raises(KeyError, match="unknown task"):
        load_task("nope")


def test_tasks_shapes_reproducibility_noise_and_clean_test_targets():
    tasks = list_tasks()
    assert len(tasks) >= 14 and tasks["control"].sum() == 2
    for name in tasks["name"]:
        t = load_task(name, n_source=30, n_train=20, n_test=25, random_state=0)
        d = t.X_source.shape[1]
        assert t.X_train.shape == (20, d) and t.X_test.shape == (25, d)
        assert t.y_source.shape == (30,) and t.y_train.shape == (20,) and t.y_test.shape == (25,)
        assert t.description and t.source_description and t.source and t.target
    a = load_task("park91a-lf-to-hf", random_state=3)
    b = load_task("park91a-lf-to-hf", random_state=3)
    c = load_task("park91a-lf-to-hf", random_state=4)
    for key in ("X_source", "y_source", "X_train", "y_train", "X_test", "y_test"):
        np.testing.assert_array_equal(a[key], b[key])
    assert not np.array_equal(a.y_train, c.y_train)
    big = load_task("friedman-sine-halved", n_train=20000, noise=0.2, random_state=0)
    target = get_function("fried", coefficients=(5.0, 20.0, 10.0, 5.0))
    np.testing.assert_allclose(big.y_test, target(big.X_test))  # noiseless
    residual = big.y_train - target(big.X_train)
    assert abs(residual.std() / big.noise_std - 1) < 0.03
    assert abs(big.noise_std / (0.2 * big.y_test.std()) - 1) < 0.05


def test_borehole_range_task_maps_the_unit_cube_to_each_box():
    t = load_task("borehole-kw-range", n_source=5, n_train=5, n_test=5, random_state=0)
    assert (t.bounds == [[0, 1]] * 8).all()
    u = t.X_test
    box = get_function("borehole", Kw_bounds=(1500, 15000)).bounds
    np.testing.assert_allclose(t.y_test, get_function("borehole", Kw_bounds=(1500, 15000))(
        box[:, 0] + u * (box[:, 1] - box[:, 0])))


@pytest.mark.parametrize("n", [-1, 2.5, 3.0, "3", None, True])
def test_sample_size_must_be_a_non_negative_integer(n):
    with pytest.raises(ValueError, match=r"^n must be a non-negative integer, got"):
        get_function("branin").sample(n)


def test_row_counts_accept_numpy_integers_and_name_the_bad_one():
    assert get_function("branin").sample(np.int64(3)).shape == (3, 2)
    assert load_task("park91a-lf-to-hf", n_train=np.int32(4)).X_train.shape == (4, 4)
    with pytest.raises(ValueError, match="n_source must be a non-negative integer, got 3.0"):
        load_task("park91a-lf-to-hf", n_source=3.0)
    with pytest.raises(ValueError, match="n_test must be a non-negative integer, got -1"):
        load_task("park91a-lf-to-hf", n_test=-1)


def test_unknown_names_suggest_close_ones():
    with pytest.raises(KeyError, match="unknown function 'borehol' \\(did you mean 'borehole'"):
        get_function("borehol")
    with pytest.raises(KeyError, match="did you mean 'park91a-lf-to-hf'"):
        load_task("park91a-lf-to-h")
    with pytest.raises(KeyError) as info:
        load_task("nope")
    assert "did you mean" not in str(info.value) and "list_tasks()" in str(info.value)


def test_task_functions_reproduce_its_data():
    for name in list_tasks()["name"]:
        t = load_task(name, n_source=40, n_train=5, n_test=40, random_state=0)
        np.testing.assert_array_equal(t.source_function(t.X_source), t.y_source)
        np.testing.assert_array_equal(t.target_function(t.X_test), t.y_test)
        assert (t.source_function.name, t.target_function.name) == (t.source, t.target)
    t = load_task("ishigami-b-halved", n_test=50, random_state=0)
    assert t.target == "ishigami" and t.target_params == {"a": 7.0, "b": 0.05}
    # The name and parameters rebuild the target from the registry.
    np.testing.assert_allclose(get_function(t.target, **t.target_params)(t.X_test), t.y_test)
    x1, x3 = t.X_test[:, 0], t.X_test[:, 2]
    np.testing.assert_allclose(t.y_test - t.source_function(t.X_test),
                               -0.05 * x3**4 * np.sin(x1))


def test_variants_behind_the_high_dimensional_tasks():
    X = get_function("welchetal92").sample(100, random_state=0)
    np.testing.assert_allclose(get_function("welchetal92", fifth_term=1)(X),
                               get_function("welchetal92")(X) + 5 * X[:, 18] - 5 * X[:, 0])
    X = get_function("robot").sample(100, random_state=0)
    without_last = X.copy()
    without_last[:, 7] = 0.0
    np.testing.assert_allclose(get_function("robot", segments=3)(X),
                               get_function("robot")(without_last))
    # Chen et al. (2024): LF1 paints W_p instead of S_w W_p, LF2 also raises S_w to 0.8,
    # LF3 raises it to 0.9 and drops the paint.
    X = get_function("wingweight").sample(100, random_state=0)
    Sw, Wp = X[:, 0], X[:, 9]
    structure = get_function("wingweight")(X) - Sw * Wp
    for fidelity, expected in [(1, structure + Wp), (2, structure * Sw**0.042 + Wp),
                               (3, structure * Sw**0.142)]:
        np.testing.assert_allclose(get_function("wingweight", fidelity=fidelity)(X), expected)
    with pytest.raises(ValueError, match="fidelity must be 0..3"):
        get_function("wingweight", fidelity=4)


@pytest.mark.parametrize("name, dim, corr", [
    ("wingweight-lf-to-hf", 10, 0.997),
    ("robot-3-to-4-segments", 8, 0.722),
    ("welch-ben-ari-to-welch", 20, 0.752),
    ("moon-hd-to-c3", 20, 0.794),
])
def test_high_dimensional_tasks_are_related_but_not_affine(name, dim, corr):
    t = load_task(name, n_source=50_000, n_train=0, n_test=100_000, random_state=0)
    assert t.X_source.shape == (50_000, dim) and np.isfinite(t.y_source).all()
    assert np.corrcoef(t.source_function(t.X_test), t.y_test)[0, 1] == pytest.approx(
        corr, abs=0.005)
