"""Training speed: `tms_slt.train` (each backend) against the plain batched PyTorch loop.

The plain loop is what a researcher writes for many TMS instances at once: W (instance,
m, n), the forward pass as einsum (ARENA style) or bmm, `loss.backward()` and a
torch.optim step, with the dense batch `rand(...) * (rand(...) >= S)`. Both sides do the
same work: the same initialization, minibatches, optimizer and steps, and the loss at
the first and last step on D_n (a) or on 10⁴ fresh samples per instance (b), as
`train(num_checkpoints=2)` records it. Contenders run interleaved in one process, each
repeat in a rotated order; a row's ratio is the median over repeats of
(faster plain loop) / ours. The attainable rate is a large sgemm measured in the same
run; a case's rate counts the 10·m·n FLOP per sample of the dense forward and backward.

Cases (issue 14):
  (a) c = 6, m = 2, one active feature, batch 100 of a fixed set of 1000, SGD, instances
      6, 100, 1000;
  (b) n = 100, m = 20 and n = 400, m = 30, S = 0.99, online, batch 1024, AdamW,
      instances 10 and 40.

Usage: python benchmarks/train_speed.py [--threads 1] [--repeats 3] [--quick]
"""

from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import dataclass

import torch
from torch import Tensor

from tms_slt.config import DataConfig, ExperimentConfig, ModelConfig, TrainConfig
from tms_slt.training import EVAL_SAMPLES, train


@dataclass(frozen=True)
class Case:
    label: str
    n: int
    m: int
    instances: int
    batch: int
    steps: int
    n_train: int = 0  # 0: online
    sparsity: float | None = None  # None: one active feature

    def config(self) -> ExperimentConfig:
        online = self.n_train == 0
        return ExperimentConfig(
            seed=0,
            data=DataConfig(
                n_features=self.n,
                sparsity=self.sparsity,
                active_features=None if self.sparsity is not None else 1,
                n_train=self.n_train,
            ),
            model=ModelConfig(n_hidden=self.m),
            train=TrainConfig(
                num_steps=self.steps,
                optimizer="adamw" if online else "sgd",
                lr=1e-3 if online else 0.1,
                batch_size=self.batch,
                num_instances=self.instances,
                num_checkpoints=2,
            ),
        )

    @property
    def flop(self) -> float:
        return 10.0 * self.m * self.n * self.batch * self.instances * self.steps


def cases(quick: bool) -> list[Case]:
    s = 10 if quick else 1
    return [
        Case("(a) c=6 m=2", 6, 2, 6, 100, 4000 // s, n_train=1000),
        Case("(a) c=6 m=2", 6, 2, 100, 100, 2000 // s, n_train=1000),
        Case("(a) c=6 m=2", 6, 2, 1000, 100, 500 // s, n_train=1000),
        Case("(b) n=100 m=20", 100, 20, 10, 1024, 200 // s, sparsity=0.99),
        Case("(b) n=100 m=20", 100, 20, 40, 1024, 50 // s, sparsity=0.99),
        Case("(b) n=400 m=30", 400, 30, 10, 1024, 30 // s, sparsity=0.99),
        Case("(b) n=400 m=30", 400, 30, 40, 1024, max(1, 10 // s), sparsity=0.99),
    ]


def _draw(case: Case, num: int, g: torch.Generator) -> Tensor:
    """(instance, num, n) samples of q, drawn densely as the plain loop would."""
    shape = (case.instances, num, case.n)
    if case.sparsity is None:  # one active feature, value U[0, 1]
        x = torch.zeros(shape)
        which = torch.randint(case.n, (*shape[:-1], 1), generator=g)
        return x.scatter_(-1, which, torch.rand(*shape[:-1], 1, generator=g))
    return torch.rand(shape, generator=g) * (torch.rand(shape, generator=g) >= case.sparsity)


def plain_loop(case: Case, variant: str, g: torch.Generator) -> None:
    """The hand-written batched loop (einsum or bmm forward, autograd, torch.optim)."""
    I, m, n, B = case.instances, case.m, case.n, case.batch
    W = ((2.0 / (m + n)) ** 0.5 * torch.randn(I, m, n, generator=g)).requires_grad_()
    b = torch.zeros(I, n, requires_grad=True)
    if case.n_train:
        opt = torch.optim.SGD([W, b], lr=0.1)
        data = _draw(case, case.n_train, g)
        rows = torch.arange(I).unsqueeze(-1)
        evaluation = data
    else:
        opt = torch.optim.AdamW([W, b], lr=1e-3)
        evaluation = _draw(case, EVAL_SAMPLES, g)

    def loss_fn(x: Tensor) -> Tensor:
        if variant == "einsum":
            h = torch.einsum("ibn,imn->ibm", x, W)
            out = torch.relu(torch.einsum("ibm,imn->ibn", h, W) + b.unsqueeze(1))
        else:
            h = torch.bmm(x, W.transpose(1, 2))
            out = torch.relu(torch.bmm(h, W) + b.unsqueeze(1))
        return ((x - out) ** 2).sum(-1).mean(-1)

    def evaluate() -> Tensor:
        with torch.no_grad():
            return torch.cat([loss_fn(x) for x in evaluation.split(1024, dim=1)])

    evaluate()
    for _ in range(case.steps):
        if case.n_train:
            x = data[rows, torch.randint(case.n_train, (I, B), generator=g)]
        else:
            x = _draw(case, B, g)
        loss = loss_fn(x).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
    evaluate()


def sgemm_rate(size: int = 2048, repeats: int = 5) -> float:
    """FLOP/s of a size × size float32 matrix product: the attainable rate here."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return 2.0 * size**3 / best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1, help="torch (and kernel) threads")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="a tenth of the steps")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    peak = sgemm_rate()
    print(f"threads: {args.threads} (torch.set_num_threads; the kernel shards instances as many)")
    print(f"attainable: sgemm 2048² = {peak / 1e9:.1f} GFLOP/s")
    contenders = {
        "plain einsum": lambda c, g: plain_loop(c, "einsum", g),
        "plain bmm": lambda c, g: plain_loop(c, "bmm", g),
        "ours torch": lambda c, g: train(c.config(), generator=g, progress=False, backend="torch"),
        "ours native": lambda c, g: train(
            c.config(), generator=g, progress=False, backend="native"
        ),
    }
    names = list(contenders)
    header = (
        f"{'case':<15} {'inst':>5} {'steps':>5} "
        + " ".join(f"{name:>12}" for name in names)
        + f" {'GFLOP/s':>8} {'%sgemm':>7} {'torch':>7} {'native':>7}"
    )
    print("seconds per run (median of repeats); ratios: faster plain loop / ours")
    print(header)
    ratios_native = []
    for case in cases(args.quick):
        contenders["ours native"](case, torch.Generator().manual_seed(0))  # build, warm up
        times: dict[str, list[float]] = {name: [] for name in names}
        for r in range(args.repeats):
            for name in names[r % len(names) :] + names[: r % len(names)]:
                start = time.perf_counter()
                contenders[name](case, torch.Generator().manual_seed(r))
                times[name].append(time.perf_counter() - start)
        plain = [min(a, b) for a, b in zip(times["plain einsum"], times["plain bmm"], strict=True)]
        ratio = {
            ours: statistics.median(p / t for p, t in zip(plain, times[ours], strict=True))
            for ours in ("ours torch", "ours native")
        }
        ratios_native.append(ratio["ours native"])
        native = statistics.median(times["ours native"])
        rate = case.flop / native
        print(
            f"{case.label:<15} {case.instances:>5} {case.steps:>5} "
            + " ".join(f"{statistics.median(times[name]):>12.3f}" for name in names)
            + f" {rate / 1e9:>8.2f} {100 * rate / peak:>6.1f}%"
            + f" {ratio['ours torch']:>6.1f}x {ratio['ours native']:>6.1f}x"
        )
    print(f"attainable after: sgemm 2048² = {sgemm_rate() / 1e9:.1f} GFLOP/s")
    overall = statistics.median(ratios_native)
    print(f"median ratio, native (auto) over the faster plain loop: {overall:.1f}x")


if __name__ == "__main__":
    main()
