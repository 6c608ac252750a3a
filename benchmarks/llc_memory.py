"""Peak memory of `estimate_llc` against the number of anchors sharing one training set.

Each anchor count runs in a fresh process (the peak resident set, `ru_maxrss`, only grows
within one), on random TMS anchors (c = 6, m = 2) and one shared training set of 30 000
rows, the setting of Chen et al.'s SGD study, where 100 seeds × 37 checkpoints make 3700
anchors. Before the curvature probe and L_n(w*) were chunked (at commit a92d54f, with
`src/` of that commit), the peak grew by ~3.5 MB per anchor: 7.3 GB at 2000.

Usage: python benchmarks/llc_memory.py [--anchors 50 500 2000] [--draws 200] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys


def peak_gb(anchors: int, draws: int) -> float:
    """One estimate_llc call with the default (automatic) settings; the process's peak RSS."""
    import torch

    from tms_slt.sampling.llc import estimate_llc

    g = torch.Generator().manual_seed(0)
    W = torch.randn(anchors, 2, 6, generator=g) * 0.5
    b = torch.zeros(anchors, 6)
    x = torch.rand(30_000, 6, generator=g) * (torch.rand(30_000, 6, generator=g) < 1 / 6)
    estimate_llc((W, b), dataset=x, num_draws=draws, num_burnin=draws // 2, generator=g)
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6  # KiB on Linux


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--anchors", type=int, nargs="+", default=[50, 500, 2000])
    parser.add_argument("--draws", type=int, default=200)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)  # child process
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    if args.one is not None:
        print(json.dumps(peak_gb(args.one, args.draws)))
        return 0
    print(f"torch threads: {args.threads}; draws: {args.draws}; 30 000 shared rows")
    print(f"{'anchors':>8} {'peak RSS (GB)':>14}")
    for a in args.anchors:
        cmd = [sys.executable, __file__, "--one", str(a), "--draws", str(args.draws)]
        cmd += ["--threads", str(args.threads)]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        print(f"{a:>8} {json.loads(out.strip().splitlines()[-1]):>14.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
