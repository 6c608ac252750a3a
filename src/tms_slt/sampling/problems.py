"""What the LLC sampler needs from each kind of target, as one `Problem`.

A problem holds the start/anchor parameters with a chain dim, a batched
`loss_and_grad`, a minibatch sampler driven by an explicit generator, L_n(w*)
and the sample size n. Three targets are supported: TMS parameters (analytic
gradients, `models.loss_and_grad`), any `torch.nn.Module` with a loss and dataset
(`torch.func.functional_call` vmapped over chains, one autograd call), and a
`theory.Potential` K(w) (a loss without data, for known-λ tests).
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from tms_slt.models import Activation, loss_and_grad, loss_hessian, reconstruction_loss
from tms_slt.sampling.sgld import LossAndGrad, autograd_loss_and_grad


@dataclass(frozen=True)
class TMSInputs:
    """What the fused TMS kernel (`sampling.native`) needs besides the chain state.

    data: (*data_lead, N, n) training sets; `data_lead` is a suffix of the anchors'
    leading shape. importance: (*lead, n) per anchor. W (..., chain, m, n) and
    b (..., chain, n): the chains' start, which is also the localization centre w*.
    """

    data: Tensor
    importance: Tensor
    activation: Activation
    sample_bias: bool
    batch_size: int
    W: Tensor
    b: Tensor

    @property
    def index_shape(self) -> tuple[int, ...]:
        """(*data_lead, chain, batch): one minibatch per training set and chain."""
        return (*self.data.shape[:-2], self.W.shape[-3], self.batch_size)

    def draw_indices(self, generator: torch.Generator, out: Tensor | None = None) -> Tensor:
        """One step's minibatch row indices, shape `index_shape`, from `generator`: the one
        place both the torch and the fused path draw them, so they share the stream."""
        return torch.randint(
            self.data.shape[-2],
            self.index_shape,
            generator=generator,
            device=generator.device,
            out=out,
        )


@dataclass(frozen=True)
class Problem:
    """Start/anchor params (each (..., chain, *event)), a batched loss and its data."""

    params: tuple[Tensor, ...]
    event_ndims: tuple[int, ...]
    loss_and_grad: LossAndGrad
    sample_batch: Callable[[torch.Generator], Any]
    init_loss: Tensor  # (...)
    n: int | None  # training-set size; None for a potential (no data)
    dims: tuple[str, ...]
    coords: dict[str, Any]
    tms: TMSInputs | None = None  # set for TMS targets: enables the fused kernel
    #: The loss (params, batch) -> (...), differentiable twice (curvature probes), and the
    #: training set as one batch for a single chain, rows restricted to `rows` when given
    #: (None for a potential: no data).
    loss_fn: Callable[[tuple[Tensor, ...], Any], Tensor] | None = None
    data_batch: Callable[[Tensor | None], Any] | None = None
    #: The exact Hessian of `loss_fn` in closed form, (params, batch) -> (..., d, d), where
    #: one is known (TMS: `models.loss_hessian`); else the probes use double backward.
    hessian_fn: Callable[[tuple[Tensor, ...], Any], Tensor] | None = None
    #: (batch) -> (..., chain) the loss of w* itself on each chain's minibatch: a control
    #: variate for the loss trace (`chains.run_chains`), set where the step costs enough
    #: that one more forward pass is cheap against the variance it removes (any nn.Module).
    anchor_batch_loss: Callable[[Any], Tensor] | None = None
    #: (params) -> (..., s, d) tangents at params of the loss's known continuous symmetries
    #: (TMS: rotations of the hidden space, W → RW), whose directions are flat by symmetry.
    symmetry_tangents: Callable[[tuple[Tensor, ...]], Tensor] | None = None

    @property
    def anchor(self) -> tuple[Tensor, ...]:
        """w*, each (..., 1, *event): the first chain's copy of the start."""
        return tuple(
            p.narrow(p.ndim - k - 1, 0, 1)
            for p, k in zip(self.params, self.event_ndims, strict=True)
        )

    @property
    def num_params(self) -> int:
        """d, the number of parameters of one chain."""
        return sum(
            math.prod(p.shape[p.ndim - k :])
            for p, k in zip(self.params, self.event_ndims, strict=True)
        )


def add_chain_dim(t: Tensor, event_ndims: int, num_chains: int) -> Tensor:
    """(..., *event) -> (..., chain, *event), each chain a copy."""
    t = t.unsqueeze(t.ndim - event_ndims)
    shape = list(t.shape)
    shape[t.ndim - event_ndims - 1] = num_chains
    return t.expand(shape).contiguous()


#: Elements (anchors × rows × features) of one chunk of a full-data loss evaluation.
FULL_LOSS_CHUNK = 2**24


def _full_loss(W: Tensor, b: Tensor, data: Tensor, importance, activation) -> Tensor:
    """L_n at every anchor (...), over the training set in row chunks: evaluated at once, the
    forward pass of thousands of anchors on a shared set of 10⁴ rows takes gigabytes."""
    N = data.shape[-2]
    anchors = math.prod(W.shape[:-2])
    rows = max(1, FULL_LOSS_CHUNK // max(1, anchors * W.shape[-1]))
    total = None
    with torch.no_grad():
        for start in range(0, N, rows):
            part = data[..., start : start + rows, :]
            chunk = reconstruction_loss(W, b, part, importance, activation) * part.shape[-2]
            total = chunk if total is None else total + chunk
    return total / N


def tms_problem(
    W: Tensor,
    b: Tensor,
    data: Tensor,
    importance: Tensor | None,
    activation: Activation,
    *,
    sample_bias: bool,
    num_chains: int,
    batch_size: int,
    dims: tuple[str, ...],
    coords: dict[str, Any],
) -> Problem:
    """TMS params W (..., m, n), b (..., n) with a training set of shape (..., N, n).

    The dataset's leading dims must be a suffix of the parameters' (e.g. one training
    set per instance, shared by every checkpoint). Each chain draws its own minibatch
    of `batch_size` rows (with replacement) every step, and that minibatch stream is
    common to every anchor sharing the training set: chain c of checkpoint k and chain
    c of checkpoint k' see the same batches (common random numbers). Each anchor's
    estimate is unchanged in distribution; differences between anchors (the LLC curve
    along training) are estimated with less noise, and one gathered batch serves all
    of them.
    """
    lead = W.shape[:-2]
    n_features = W.shape[-1]
    if b.shape != (*lead, n_features):
        raise ValueError(f"b must have shape {(*lead, n_features)}, got {tuple(b.shape)}")
    if data.ndim < 2 or data.shape[-1] != n_features:
        raise ValueError(f"dataset must have shape (..., n, {n_features}), got {tuple(data.shape)}")
    data_lead, N = data.shape[:-2], data.shape[-2]
    if len(data_lead) > len(lead) or tuple(lead[len(lead) - len(data_lead) :]) != tuple(data_lead):
        raise ValueError(
            f"dataset leading shape {tuple(data_lead)} must be a suffix of the parameters' "
            f"leading shape {tuple(lead)}"
        )
    if batch_size > N:
        raise ValueError(f"batch_size={batch_size} is larger than the dataset (n={N})")
    init_loss = _full_loss(W, b, data, importance, activation)
    ones = torch.ones(n_features, dtype=W.dtype, device=W.device)
    anchor_importance = (ones if importance is None else importance).expand(*lead, n_features)
    if importance is not None and importance.ndim > 1:
        importance = importance.unsqueeze(-2)  # per-instance importances: room for the chain dim
    W0 = add_chain_dim(W, 2, num_chains)
    b0 = add_chain_dim(b, 1, num_chains)
    tms = TMSInputs(
        data=data,
        importance=anchor_importance,
        activation=activation,
        sample_bias=sample_bias,
        batch_size=batch_size,
        W=W0,
        b=b0,
    )
    flat = data.reshape(-1, n_features)
    offsets = (torch.arange(flat.shape[0] // N, device=data.device) * N).reshape(*data_lead, 1, 1)

    def sample_batch(generator: torch.Generator) -> Tensor:
        rows = (tms.draw_indices(generator).to(data.device) + offsets).flatten()
        return flat.index_select(0, rows).view(*tms.index_shape, n_features)

    if sample_bias:

        def grad_fn(params: tuple[Tensor, ...], x: Tensor) -> tuple[Tensor, tuple[Tensor, ...]]:
            loss, dW, db = loss_and_grad(params[0], params[1], x, importance, activation)
            return loss, (dW, db)

        params, event = (W0, b0), (2, 1)
    else:

        def grad_fn(params: tuple[Tensor, ...], x: Tensor) -> tuple[Tensor, tuple[Tensor, ...]]:
            # b is not sampled: its chain copies are equal, so one broadcasts to any chain count
            loss, dW, _ = loss_and_grad(params[0], b0[..., :1, :], x, importance, activation)
            return loss, (dW,)

        params, event = (W0,), (2,)

    def loss_fn(params: tuple[Tensor, ...], x: Tensor) -> Tensor:
        bias = params[1] if sample_bias else b0[..., :1, :]
        return reconstruction_loss(params[0], bias, x, importance, activation)

    def data_batch(rows: Tensor | None) -> Tensor:
        x = data if rows is None else data.index_select(-2, rows.to(data.device))
        return x.unsqueeze(-3)  # (*data_lead, chain=1, rows, n)

    def hessian_fn(params: tuple[Tensor, ...], x: Tensor) -> Tensor:
        # In the data's precision (float32): summed over row chunks in float64 by the
        # caller, it resolves eigenvalues far below the null threshold, at a third of the
        # float64 cost.
        bias = params[1] if sample_bias else b0[..., :1, :]
        return loss_hessian(
            params[0].to(x.dtype),
            bias.to(x.dtype),
            x,
            importance,
            activation,
            with_bias=sample_bias,
        )

    return Problem(
        params,
        event,
        grad_fn,
        sample_batch,
        init_loss,
        N,
        dims,
        coords,
        tms,
        loss_fn,
        data_batch,
        hessian_fn,
        symmetry_tangents=functools.partial(rotation_tangents, with_bias=sample_bias),
    )


def rotation_tangents(params: tuple[Tensor, ...], *, with_bias: bool) -> Tensor:
    """(..., m(m−1)/2, d) the tangents (G W, 0) of the TMS loss's rotation symmetry
    W → RW (WᵀW is unchanged) at W, for the generators G = E_ab − E_ba (a < b) of so(m);
    the b block (when sampled) is zero. Flattened as the probes flatten (vec W, then b)."""
    W = params[0]
    m, n = W.shape[-2:]
    tangents = []
    for a, c in itertools.combinations(range(m), 2):
        GW = torch.zeros_like(W)
        GW[..., a, :] = W[..., c, :]
        GW[..., c, :] = -W[..., a, :]
        flat = GW.flatten(-2)
        if with_bias:
            flat = torch.cat([flat, torch.zeros_like(W[..., 0, :])], dim=-1)
        tangents.append(flat)
    if not tangents:  # m = 1: no rotation
        return W.new_zeros(*W.shape[:-2], 0, m * n + (n if with_bias else 0))
    return torch.stack(tangents, dim=-2)


def as_dataset(dataset: Any) -> tuple[Tensor, ...]:
    """A tensor or a tuple of tensors sharing their first (sample) dim; also what devinterp
    users pass: a `torch.utils.data.DataLoader` (its dataset is used, every sample, since
    minibatches are drawn here from the sampler's generator), a `TensorDataset`, or any
    map-style `Dataset` whose items collate into tensors."""
    from torch.utils.data import DataLoader, Dataset, TensorDataset, default_collate

    if isinstance(dataset, DataLoader):
        dataset = dataset.dataset
    if isinstance(dataset, TensorDataset):
        dataset = tuple(dataset.tensors)
    elif isinstance(dataset, Dataset):
        items = [dataset[i] for i in range(len(dataset))]  # type: ignore[arg-type]
        if not items:
            raise ValueError("the dataset is empty")
        batch = default_collate(items)
        dataset = tuple(batch) if isinstance(batch, list | tuple) else batch
    tensors = (dataset,) if isinstance(dataset, Tensor) else tuple(dataset or ())
    if not tensors or not all(isinstance(t, Tensor) for t in tensors):
        raise ValueError(
            "dataset must be a tensor, a tuple of tensors, a torch Dataset or a DataLoader"
        )
    n = tensors[0].shape[0]
    if any(t.shape[0] != n for t in tensors):
        raise ValueError("all dataset tensors must have the same first dimension")
    return tensors


def module_problem(
    model: torch.nn.Module,
    loss_fn: Callable[[Callable[..., Any], tuple[Tensor, ...]], Tensor] | None,
    dataset: Any,
    *,
    num_chains: int,
    batch_size: int,
) -> Problem:
    """Any nn.Module: `loss_fn(model, batch) -> scalar mean loss of the batch`.

    `model` inside `loss_fn` is a callable running the module with one chain's
    parameters (`torch.func.functional_call`); chains are `vmap`ped and one autograd
    call gives every chain's gradient. Errors are raised here, before any sampling.
    """
    from torch.func import functional_call, vmap

    named = dict(model.named_parameters())
    if not named:
        raise ValueError("the model has no parameters to sample")
    names, values = tuple(named), tuple(named.values())
    if loss_fn is None:
        raise ValueError("an nn.Module needs loss_fn(model, batch) -> scalar mean loss")
    data = as_dataset(dataset)
    N = data[0].shape[0]
    if batch_size > N:
        raise ValueError(f"batch_size={batch_size} is larger than the dataset (n={N})")
    buffers = dict(model.named_buffers())

    def single_loss(params: tuple[Tensor, ...], batch: tuple[Tensor, ...]) -> Tensor:
        state = {**dict(zip(names, params, strict=True)), **buffers}
        out = loss_fn(lambda *args, **kw: functional_call(model, state, args, kw), batch)
        # devinterp's `evaluate(model, batch)` may return (loss, outputs): take the loss
        return out[0] if isinstance(out, tuple | list) else out

    anchor = tuple(v.detach() for v in values)
    with torch.no_grad():
        probe = single_loss(anchor, tuple(t[:batch_size] for t in data))
        if not isinstance(probe, Tensor) or probe.ndim != 0:
            shape = tuple(probe.shape) if isinstance(probe, Tensor) else type(probe).__name__
            raise ValueError(
                f"loss_fn must return a scalar tensor (the mean loss of a batch), got {shape}"
            )
        chunks = [
            single_loss(anchor, tuple(t[i : i + batch_size] for t in data)) * min(batch_size, N - i)
            for i in range(0, N, batch_size)
        ]
        init_loss = torch.stack(chunks).sum() / N

    def batched_loss(params: tuple[Tensor, ...], batch: tuple[Tensor, ...]) -> Tensor:
        chains = params[0].shape[0]
        if batch[0].shape[0] != chains:  # one batch (chain dim 1) for every chain
            batch = tuple(t.expand(chains, *t.shape[1:]) for t in batch)
        return vmap(single_loss)(params, batch)

    def sample_batch(generator: torch.Generator) -> tuple[Tensor, ...]:
        idx = torch.randint(
            N, (num_chains, batch_size), generator=generator, device=generator.device
        )
        return tuple(t[idx.to(t.device)] for t in data)

    params = tuple(add_chain_dim(v, v.ndim, num_chains) for v in anchor)
    event = tuple(v.ndim for v in anchor)

    def data_batch(rows: Tensor | None) -> tuple[Tensor, ...]:
        return tuple((t if rows is None else t[rows.to(t.device)]).unsqueeze(0) for t in data)

    def anchor_batch_loss(batch: tuple[Tensor, ...]) -> Tensor:
        with torch.no_grad():
            return batched_loss(params, batch)

    grad_fn = autograd_loss_and_grad(batched_loss)
    return Problem(
        params,
        event,
        grad_fn,
        sample_batch,
        init_loss,
        N,
        (),
        {},
        loss_fn=batched_loss,
        data_batch=data_batch,
        anchor_batch_loss=anchor_batch_loss,
    )


def potential_problem(potential: Any, anchor: Tensor | None, *, num_chains: int) -> Problem:
    """A `theory.Potential` K(w) ≥ 0 as a loss without data, anchored at w* (default 0).

    λ̂ = nβ(E[K] − K(w*)); there is no n, so nβ must be given explicitly.
    """
    dim = potential.dim
    w0 = torch.zeros(dim) if anchor is None else torch.as_tensor(anchor, dtype=torch.float32)
    if w0.shape[-1:] != (dim,):
        raise ValueError(f"anchor must have shape (..., {dim}), got {tuple(w0.shape)}")
    with torch.no_grad():
        init_loss = potential(w0)

    def loss(params: tuple[Tensor, ...], _batch: Any) -> Tensor:
        return potential(params[0])

    lead = w0.shape[:-1]
    return Problem(
        params=(add_chain_dim(w0, 1, num_chains),),
        event_ndims=(1,),
        loss_and_grad=autograd_loss_and_grad(loss),
        sample_batch=lambda _generator: None,
        init_loss=init_loss,
        n=None,
        dims=tuple(f"dim_{i}" for i in range(len(lead))),
        coords={},
        loss_fn=loss,
    )


def select_anchors(problem: Problem, index: Tensor) -> Problem | None:
    """The same problem restricted to the anchors at flat leading positions `index` (k,),
    with one leading dim of size k; None where this kind of problem cannot be split (then
    every anchor runs). A problem with a single anchor is returned as it is.

    A TMS problem is rebuilt on each selected anchor's own copy of its training set (the
    minibatches are then no longer common to anchors sharing a set) and keeps its L_n(w*).
    """
    lead = problem.init_loss.shape
    if math.prod(lead) == 1 and len(index) == 1:
        return problem
    tms = problem.tms
    if tms is None:
        return None
    N, n = tms.data.shape[-2:]
    data = tms.data.expand(*lead, N, n).reshape(-1, N, n).index_select(0, index)
    W = tms.W.select(-3, 0).reshape(-1, *tms.W.shape[-2:]).index_select(0, index)
    b = tms.b.select(-2, 0).reshape(-1, n).index_select(0, index)
    importance = tms.importance.reshape(-1, n).index_select(0, index)
    sub = tms_problem(
        W,
        b,
        data,
        importance,
        tms.activation,
        sample_bias=tms.sample_bias,
        num_chains=tms.W.shape[-3],
        batch_size=tms.batch_size,
        dims=("anchor",),
        coords={},
    )
    return dataclasses.replace(sub, init_loss=problem.init_loss.reshape(-1).index_select(0, index))
