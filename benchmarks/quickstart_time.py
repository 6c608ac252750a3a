"""Where the time of `tms-slt quickstart` goes, phase by phase.

    .venv/bin/python benchmarks/quickstart_time.py [--threads N] [--repeats 3]

Runs the quickstart's own path (`cli._train_and_track` with the default config, then
`save_run` and the figure, into a temporary directory) `--repeats` times and prints the
median seconds of each phase: training; inside `estimate_llc` the curvature probes (the
Hessian on every row, the full-data gradient), the minibatch-noise measurements, the
pilots, the main chains, and the checks after the run; then tracking (with, inside it,
the R-hat/ESS/MCSE of every anchor and the k-gons' theoretical λ), saving and the
figure. Each phase is timed by wrapping the function that does it, so the phases add up
to less than the total (the remainder is glue). Thread count stated in the output.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections import defaultdict
from contextlib import contextmanager
from pathlib import Path

import torch

import tms_slt.sampling.curvature as curvature
import tms_slt.sampling.llc as llc
import tms_slt.sampling.mcmc_stats as mcmc_stats
import tms_slt.sampling.noise as noise
import tms_slt.sampling.settings as settings
import tms_slt.transitions.tracking as tracking
from tms_slt import cli
from tms_slt.config import ExperimentConfig
from tms_slt.theory.tms import kgon_llc_report, kgon_solution

#: (module, function name, phase): each wrapped to add its wall time to its phase.
PHASES = [
    (cli, "train", "train"),
    (curvature, "_hessian", "Hessian (all rows, and the probes' subset)"),
    (curvature, "full_gradient", "full-data gradient at the anchors"),
    (settings, "gradient_noise", "minibatch-noise measurements"),
    (noise, "gradient_noise", "minibatch-noise measurements"),
    (settings, "_pilot_round", "pilot runs (incl. their probes)"),
    (llc, "sample", "main chains (incl. pilots' sampling: see above)"),
    (llc, "extend_for_precision", "longer chains where λ̂ is imprecise"),
    (llc, "curvature_ratio_at_ends", "curvature ratio after the run"),
    (llc, "lowest_loss_at_ends", "lower-loss check after the run"),
    (llc, "compute_llc", "LLC from the traces"),
    (mcmc_stats, "convergence", "R-hat, ESS, MCSE (sampling.mcmc_stats; in tracking)"),
    (tracking, "_kgon_theory", "λ of the k-gons, llc_theory (in tracking)"),
    (cli, "_results", "tracking (observables, diagnostics, detector inputs)"),
]


def _wrap(module, name, phase, times):
    original = getattr(module, name, None)
    if original is None:
        raise AttributeError(f"{module.__name__}.{name} is gone: update PHASES")

    def timed(*args, **kwargs):
        start = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            times[phase] += time.perf_counter() - start

    setattr(module, name, timed)
    return original


@contextmanager
def _timers(times):
    originals = []
    for module, name, phase in PHASES:
        if name == "train":  # cli imports train inside the function: wrap it at the source
            import tms_slt.training as module
        originals.append((module, name, _wrap(module, name, phase, times)))
    try:
        yield
    finally:
        for module, name, original in originals:
            if original is not None:
                setattr(module, name, original)


def run_once() -> dict[str, float]:
    from tms_slt.io import save_figure, save_run
    from tms_slt.plots import plot_quickstart

    times: dict[str, float] = defaultdict(float)
    # Every CLI run solves for the k-gons' λ afresh: so does every repeat here.
    kgon_llc_report.cache_clear()
    kgon_solution.cache_clear()
    config = ExperimentConfig()
    start = time.perf_counter()
    with _timers(times):
        _, llc_result, tracked = cli._train_and_track(config, with_llc=True, progress=False)
    instance, _ = cli._showcase(tracked, None)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "run"
        t0 = time.perf_counter()
        save_run(out, tracked, config, command="quickstart", shown_instance=instance,
                 traces=cli._traces(llc_result))  # fmt: skip
        times["save (results.nc, traces.nc, meta)"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        save_figure(plot_quickstart(tracked, instance=instance), out / "quickstart.png")
        times["figure"] = time.perf_counter() - t0
    times["total"] = time.perf_counter() - start
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    runs = [run_once() for _ in range(args.repeats)]
    print(f"threads: {args.threads}; median of {args.repeats} runs (seconds)")
    print("| phase | s |\n|---|---|")
    for phase in runs[0]:
        print(f"| {phase} | {statistics.median(r[phase] for r in runs):.2f} |")


if __name__ == "__main__":
    main()
