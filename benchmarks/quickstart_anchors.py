"""Where the quickstart's sampling work goes, anchor by anchor (issue #21, performance row).

    .venv/bin/python benchmarks/quickstart_anchors.py [--threads N]

Runs the quickstart's own path once (`cli._train_and_track`, default config) and prints,
per checkpoint: how many of its instances' anchors are near a minimum
(`curvature.near_minimum`: the pre-run Newton-shift and saddle checks, which no chain can
pass or fail), reliable, and lengthened by `sampling.precision` (with their factors f);
then the share of the main run's anchor-steps spent on anchors that are not near a
minimum (every anchor runs the common chain length; λ̂ there is flagged whatever the
chains do, and the detector reads only reliable λ̂), the number of steps the extension
runs one after another, and its seconds per such step against the main run's seconds per
anchor-step (the extension moves few anchors per step, so its per-step cost, not its
anchor-steps, sets its time). One run, not a median: the counts are what it is for; the
seconds are for `benchmarks/quickstart_time.py`. Thread count stated in the output.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

import tms_slt.sampling.curvature as curvature
import tms_slt.sampling.llc as llc
import tms_slt.sampling.precision as precision
import tms_slt.sampling.settings as settings
from tms_slt import cli
from tms_slt.config import ExperimentConfig


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    seen: dict = {"sample": [], "extension_steps": 0}
    chain_length, extend, sample = settings.chain_length, llc.extend_for_precision, precision.sample
    main_sample = llc.sample

    def recorded_length(curv, nbeta, eps, gam, num_draws, num_burnin):
        seen["near"] = curvature.near_minimum(curv, nbeta)
        return chain_length(curv, nbeta, eps, gam, num_draws, num_burnin)

    def timed_main(problem, kernel, num_draws, *a, **k):
        start = time.perf_counter()
        out = main_sample(problem, kernel, num_draws, *a, **k)
        seen["sample"].append((problem.init_loss.numel(), num_draws, time.perf_counter() - start))
        return out

    def counted(problem, kernel, num_draws, *a, **k):
        seen["extension_steps"] += num_draws
        return sample(problem, kernel, num_draws, *a, **k)

    def timed_extension(*a, **k):
        start = time.perf_counter()
        out = extend(*a, **k)
        seen["extension_s"] = time.perf_counter() - start
        return out

    settings.chain_length, llc.sample = recorded_length, timed_main
    precision.sample, llc.extend_for_precision = counted, timed_extension
    try:
        trajectory, result, _ = cli._train_and_track(
            ExperimentConfig(), with_llc=True, progress=False
        )
    finally:
        settings.chain_length, llc.sample = chain_length, main_sample
        precision.sample, llc.extend_for_precision = sample, extend
    near = seen["near"].numpy()
    reliable = np.asarray(result.diagnostics["reliable"].values, dtype=bool)
    factors = result.calibration["extension"].numpy()
    steps = trajectory.steps.numpy()
    print(f"threads: {args.threads}; one run")
    print(f"anchors: {near.size} ({near.shape[0]} checkpoints x {near.shape[1]} instances)")
    print("| checkpoint | step | near a minimum | reliable | lengthened (f) |")
    print("|---|---|---|---|---|")
    for c in range(near.shape[0]):
        f = ", ".join(str(int(v)) for v in factors[c] if v > 1) or "-"
        print(f"| {c} | {steps[c]} | {int(near[c].sum())} | {int(reliable[c].sum())} | {f} |")
    anchors, draws, seconds = seen["sample"][0]
    per_anchor_step = seconds / (anchors * draws)
    post = draws - int(result.num_burnin)
    print(f"\nmain run: {draws} draws x {anchors} anchors in {seconds:.2f} s "
          f"({1e6 * per_anchor_step:.2f} µs per anchor-step)")  # fmt: skip
    print(f"anchors not near a minimum: {int((~near).sum())} of {near.size} "
          f"({100 * (~near).mean():.0f}% of the main run's anchor-steps)")  # fmt: skip
    units = int((factors - 1).sum())
    ext_steps, ext_s = seen["extension_steps"], seen.get("extension_s", 0.0)
    per_step = 1e6 * ext_s / max(ext_steps, 1)
    print(f"extension: {units} x {post} anchor-steps (as the main run: "
          f"{units * post * per_anchor_step:.2f} s), run as {ext_steps} steps one after "
          f"another in {ext_s:.2f} s ({per_step:.0f} µs per step)")  # fmt: skip


if __name__ == "__main__":
    main()
