"""Per chain-step cost of the batched LLC sampler vs a plain loop over devinterp's SGLD.

    .venv/bin/python benchmarks/llc_speed.py [--checkpoints 100 --chains 8 --draws 1000
                                              --batch-size 100 --repeats 3 --compile]

Both sample the same TMS checkpoints (6 features, 2 hidden, trained briefly) with the same
ε, nβ, γ, chains, draws and batch size. Ours advances every checkpoint × chain together:
`backend="native"` (the fused C kernel, the default where a C compiler exists) and
`backend="torch"` (one batched eager step, analytic gradients), and with --compile also
`backend="compile"`; all three follow the same trajectory, and the λ̂ they give is printed.
devinterp is what its user writes: one nn.Module per
chain and checkpoint, `SGMCMC.sgld`, a minibatch and `loss.backward()` per step. devinterp
runs on a subset (`--devinterp-chains` chain-runs of `--devinterp-draws` draws) and its
cost is extrapolated per chain-step; the output says so. Timings are medians of
`--repeats` runs; memory is the growth of the process's peak RSS during each phase.
Finally λ̂ of the last checkpoint from both samplers is compared within 3 standard errors.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import time

import torch

from tms_slt.config import config_from_dict
from tms_slt.sampling import native
from tms_slt.sampling.llc import estimate_llc
from tms_slt.sampling.reference import devinterp_llc
from tms_slt.training import train


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _checkpoints(num: int):
    config = config_from_dict(
        {
            "seed": 0,
            "data": {"n_features": 6, "n_train": 1000, "sparsity": 0.9},
            "model": {"n_hidden": 2},
            "train": {"num_instances": 1, "num_steps": 3000, "num_checkpoints": 2},
        }
    )
    traj = train(config, progress=False)
    W, b = traj.W[-1, 0], traj.b[-1, 0]
    # The last checkpoint repeated: the cost does not depend on the values.
    return W.expand(num, *W.shape).clone(), b.expand(num, *b.shape).clone(), traj


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoints", type=int, default=100)
    p.add_argument("--chains", type=int, default=8)
    p.add_argument("--draws", type=int, default=1000)
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--devinterp-chains", type=int, default=8)
    p.add_argument("--devinterp-draws", type=int, default=1000)
    p.add_argument("--compile", action="store_true", help="also time compile=True")
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = p.parse_args()
    torch.set_num_threads(args.threads)

    W, b, traj = _checkpoints(args.checkpoints)
    data, importance = traj.train_data[0], traj.importance
    settings = {
        "step_size": 1e-3,
        "nbeta": 100.0,
        "localization": 100.0,
        "num_chains": args.chains,
        "num_draws": args.draws,
        "num_burnin": args.draws // 5,
        "batch_size": args.batch_size,
    }
    chain_steps = args.checkpoints * args.chains * args.draws
    print(
        f"{args.checkpoints} checkpoints × {args.chains} chains × {args.draws} draws, "
        f"batch {args.batch_size}, 6 features / 2 hidden, {args.threads} thread(s)"
    )

    def ours(backend: str) -> tuple[float, float, object]:
        warmup = backend in ("compile", "native")  # the first run pays the compile
        times, rss0, result = [], _peak_rss_mb(), None
        # Seeds 0 .. repeats−1 for the timed runs of every backend, so the last results
        # share one random stream and their λ̂ must agree to float rounding.
        for seed in range(-int(warmup), args.repeats):
            t0 = time.perf_counter()
            result = estimate_llc(
                (W, b),
                dataset=data,
                importance=importance,
                progress=False,
                backend=backend,
                generator=torch.Generator().manual_seed(max(seed, 0)),
                **settings,
            )
            if seed >= 0:
                times.append(time.perf_counter() - t0)
        return statistics.median(times) / chain_steps * 1e6, _peak_rss_mb() - rss0, result

    backends = ["native", "torch", *(["compile"] if args.compile else [])]
    if not native.available():
        print("no C compiler: the native backend is skipped")
        backends.remove("native")
    timed = {}
    for backend in backends:
        us, mb, result = ours(backend)
        timed[backend] = (us, result)
        print(
            f"ours ({backend + '):':9} {us:8.3f} µs per chain-step, peak RSS +{mb:.0f} MB, "
            f"λ̂ (last checkpoint) {float(result.mean[-1]):.4f}"
        )
    best_name = min(timed, key=lambda k: timed[k][0])
    best_us, best = timed[best_name]

    di_settings = {**settings, "num_chains": args.devinterp_chains}
    di_settings["num_draws"] = args.devinterp_draws
    di_settings["num_burnin"] = args.devinterp_draws // 5
    times, rss0 = [], _peak_rss_mb()
    ref = None
    for r in range(max(1, args.repeats)):
        t0 = time.perf_counter()
        ref = devinterp_llc(
            W[-1:],
            b[-1:],
            data,
            importance=importance,
            generator=torch.Generator().manual_seed(100 + r),
            **di_settings,
        )
        times.append(time.perf_counter() - t0)
    di_steps = args.devinterp_chains * args.devinterp_draws
    di_us = statistics.median(times) / di_steps * 1e6
    print(
        f"devinterp loop:    {di_us:8.3f} µs per chain-step (measured on 1 checkpoint × "
        f"{args.devinterp_chains} chains × {args.devinterp_draws} draws, extrapolated), "
        f"peak RSS +{_peak_rss_mb() - rss0:.0f} MB"
    )
    for backend, (us, _) in timed.items():
        print(f"speed-up ({backend + '):':9} {di_us / us:8.1f}× vs devinterp")
    print(
        f"estimated wall time for the full job: ours ({best_name}) "
        f"{best_us * chain_steps / 1e6:.1f} s, devinterp {di_us * chain_steps / 1e6:.0f} s"
    )

    se_ours = float(best.diagnostics["mcse"][-1])
    se_ref = float(ref.diagnostics["mcse"][0])
    diff = float(best.mean[-1]) - float(ref.mean[0])
    ok = abs(diff) < 3 * (se_ours**2 + se_ref**2) ** 0.5
    print(
        f"λ̂ last checkpoint: ours {float(best.mean[-1]):.3f} ± {se_ours:.3f}, devinterp "
        f"{float(ref.mean[0]):.3f} ± {se_ref:.3f} -> {'agree' if ok else 'DISAGREE'} (3 SE)"
    )


if __name__ == "__main__":
    main()
