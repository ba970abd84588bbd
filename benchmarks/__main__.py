"""``python -m benchmarks [STUDY] [options]``: the grid (no study named), or one study.

``python -m benchmarks --quick`` runs the main job (:mod:`benchmarks.run`);
``python -m benchmarks gp_kinds --development`` is ``python -m benchmarks.gp_kinds
--development``, and so for every study in :data:`STUDIES`.
"""

import importlib
import sys

STUDIES = ("ablations", "adapter_speed", "conformal", "continual", "defaults", "described_tasks",
           "description_channels", "early_stopping", "fewshot_regimes",
           "estimator_overhead", "gp_kinds", "growing_n", "learned_prior", "output_calibration",
           "pareto", "path_stopping", "regularization", "transfer_auto", "tuned")
# Studies renamed so that no benchmark module shares a name with a package module: the
# old name still runs the study (its result folders resume under either name).
RENAMED = {"multitask": "described_tasks"}


def main(argv=None) -> None:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] in RENAMED:
        print(f"the study {argv[0]!r} is now {RENAMED[argv[0]]!r} "
              f"(python -m benchmarks.{RENAMED[argv[0]]})", file=sys.stderr)
        argv[0] = RENAMED[argv[0]]
    if argv and argv[0] in STUDIES:
        return importlib.import_module(f"benchmarks.{argv[0]}").main(argv[1:])
    if argv and not argv[0].startswith("-"):
        raise SystemExit(f"unknown study {argv[0]!r}; choose from {', '.join(STUDIES)}, or "
                         "give no study for the grid")
    from .run import main as grid

    return grid(argv)


if __name__ == "__main__":
    main()
