"""benchmarks.growing_n: the variational GP peer, the crossover rule, and a tiny run end to
end."""

import numpy as np
import pandas as pd
import pytest

from benchmarks.growing_n import crossover, main
from benchmarks.scalable_gp import SVGPRegressor

TINY = ["--tasks", "forrester-lf-to-hf", "--sizes", "20", "60", "--seeds", "0",
        "--n-source", "150", "--n-test", "100", "--exact-max", "20", "--svgp-min", "60",
        "--svgp-steps", "30", "--max-steps", "20"]


def test_tiny_run_fits_each_gp_where_it_is_asked_and_plots(tmp_path):
    output = tmp_path / "run"
    main([*TINY, "--output", str(output)])
    df = pd.read_csv(output / "results.csv")
    methods = df.groupby("n_train").method.apply(set)
    assert methods[20] == {"gp-ar1", "gp-nargp", "lora", "ql", "finetune"}
    assert methods[60] == {"gp-ar1-subset", "gp-nargp-subset", "svgp-ar1", "svgp-nargp", "lora",
                           "ql", "finetune"}
    assert (df.rmse_sd > 0).all() and (df.fit_time_s > 0).all()
    assert (output / "growing_n_forrester-lf-to-hf.png").stat().st_size > 0
    assert "Crossover n*" in (output / "growing_n.md").read_text()


def test_crossover_is_where_an_adapter_stays_ahead_of_every_gp():
    def rows(task, table):
        return [{"task": task, "seed": 0, "n_train": n, "method": m, "rmse_sd": v}
                for n, values in table.items() for m, v in values.items()]

    df = pd.DataFrame(
        rows("overtakes", {50: {"gp-ar1": 1.0, "lora": 2.0}, 1000: {"gp-ar1": 1.0, "lora": 0.5},
                           10000: {"svgp-ar1": 1.0, "finetune": 0.5, "lora": 3.0}})
        + rows("leads-then-falls", {50: {"gp-ar1": 1.0, "lora": 0.5},
                                    1000: {"gp-nargp": 1.0, "ql": 2.0}})
        + rows("never", {50: {"gp-ar1": 1.0, "lora": 2.0}}))
    assert crossover(df) == {"overtakes": 1000, "leads-then-falls": None, "never": None}


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    X = rng.uniform(size=(200, 2))
    f = np.sin(6 * X[:, 0]) + X[:, 1]
    y = 2.0 * f + 0.5 + 0.05 * np.sin(9 * X[:, 1]) + rng.normal(0, 0.01, 200)
    return X, y


class _Base:
    def predict(self, X):
        return np.sin(6 * X[:, 0]) + X[:, 1]


def test_svgp_recovers_the_scale_and_repeats_with_its_seed(data):
    X, y = data
    fits = [SVGPRegressor(_Base(), kind="ar1", n_steps=150, n_inducing=32,
                          random_state=3).fit(X, y) for _ in range(2)]
    assert fits[0].rho_ == pytest.approx(2.0, abs=0.05)
    np.testing.assert_array_equal(fits[0].predict(X), fits[1].predict(X))
    mean, std = fits[0].predict(X[:7], return_std=True)
    assert mean.shape == std.shape == (7,) and (std > 0).all()
    rmse = np.sqrt(np.mean((fits[0].predict(X) - y) ** 2))
    assert rmse < 0.1 * y.std()
    nargp = SVGPRegressor(_Base(), kind="nargp", n_steps=150, n_inducing=32,
                          random_state=3).fit(X, y)
    assert np.sqrt(np.mean((nargp.predict(X) - y) ** 2)) < 0.3 * y.std()
    with pytest.raises(ValueError, match="kind must be"):
        SVGPRegressor(_Base(), kind="mfk").fit(X, y)
