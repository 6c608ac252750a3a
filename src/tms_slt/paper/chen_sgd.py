"""The SGD-plateau part of the Chen et al. 2023 reproduction: plateau sequences, transition
statistics, figures and table, from saved results."""

from __future__ import annotations

import itertools
import math
from collections import Counter
from pathlib import Path

import numpy as np
import torch
import xarray as xr

from tms_slt.io import atomic_write_text, save_figure
from tms_slt.paper.common import Built, table

#: A plateau's loss must be within this (relative) of its critical point's to be matched.
LOSS_RTOL = 0.05


def functional_labels(ds: xr.Dataset) -> np.ndarray:
    """(checkpoint, instance) k-gon labels recomputed from the saved W, b with the current
    `geometry` rule (a dead column is dead on its own input), not the labels stored when the
    experiment ran."""
    from tms_slt.geometry import kgon_labels

    W = torch.as_tensor(ds["W"].values)
    b = torch.as_tensor(ds["b"].values)
    return kgon_labels(W, b).astype(str)


def plateau_transitions(ds: xr.Dataset) -> tuple[list[dict], list[dict]]:
    """Every seed's plateaus and the transitions between consecutive ones.

    A plateau: a stage of the debounced functional k-gon label (`functional_labels`; the
    detector's flicker filter, 2 checkpoints). Its representative is its checkpoint of least
    ‖∇L‖ (exact population loss), matched to a critical point by
    `transitions.critical.match_critical_points` (refined to the nearest critical point;
    loss within ``LOSS_RTOL``; regular geometry), or left unmatched. Per transition: Δloss of
    the plateau medians of the loss; ``delta_llc_exact``, the difference of `theory.kgon_llc`
    of the two *matched* critical points (NaN unless both are matched and both λ known); and
    ``delta_llc_reliable``, of the plateau medians of the reliable λ̂ only (NaN when a plateau
    has none).

    Returns:
        (plateaus, transitions), lists of dicts.
    """
    from tms_slt.transitions.critical import match_critical_points
    from tms_slt.transitions.dynamical import plateau_segments

    labels = functional_labels(ds)
    W = torch.as_tensor(ds["W"].values, dtype=torch.float64)
    b = torch.as_tensor(ds["b"].values, dtype=torch.float64)
    grad_norm = _grad_norms(W, b)  # (checkpoint, instance)
    plateaus = []
    for j, inst in enumerate(ds["instance"].values):
        loss = ds["loss"].values[:, j]
        llc = ds["llc_mean"].values[:, j]
        reliable = ds["llc_reliable"].values[:, j].astype(bool)
        for a, stop, label in plateau_segments(labels[:, j]):
            rep = a + int(np.argmin(grad_norm[a:stop, j]))
            good = reliable[a:stop]
            plateaus.append(
                {
                    "instance": int(inst),
                    "start": a,
                    "stop": stop,
                    "label": label,
                    "representative": rep,
                    "loss": float(np.median(loss[a:stop])),
                    "llc_reliable": float(np.median(llc[a:stop][good])) if good.any() else math.nan,
                }
            )
    reps_W = torch.stack([W[p["representative"], _col(ds, p)] for p in plateaus])
    reps_b = torch.stack([b[p["representative"], _col(ds, p)] for p in plateaus])
    for p, m in zip(
        plateaus, match_critical_points(reps_W, reps_b, loss_rtol=LOSS_RTOL), strict=True
    ):
        p["match"] = m.label
        p["reason"] = m.reason
        p["point_loss"] = m.loss  # exact loss at the representative checkpoint
        p["llc_exact"] = _exact_llc(m.label) if m.label is not None else math.nan
    transitions = []
    for before, after in itertools.pairwise(plateaus):
        if before["instance"] != after["instance"]:
            continue
        transitions.append(
            {
                "instance": before["instance"],
                "step": int(ds["checkpoint"].values[after["start"]]),
                "before": before["label"],
                "after": after["label"],
                "matched_before": before["match"],
                "matched_after": after["match"],
                "delta_loss": after["loss"] - before["loss"],
                "delta_llc_reliable": after["llc_reliable"] - before["llc_reliable"],
                "delta_llc_exact": after["llc_exact"] - before["llc_exact"],
            }
        )
    return plateaus, transitions


def _col(ds: xr.Dataset, plateau: dict) -> int:
    return int(np.flatnonzero(ds["instance"].values == plateau["instance"])[0])


def _grad_norms(W: torch.Tensor, b: torch.Tensor) -> np.ndarray:
    """‖∇L‖ of the exact population loss at every (..., 2, c) point."""
    from tms_slt.theory import tms_population_loss_torch

    W = W.clone().requires_grad_(True)
    b = b.clone().requires_grad_(True)
    gW, gb = torch.autograd.grad(tms_population_loss_torch(W, b).sum(), (W, b))
    return torch.sqrt(gW.square().sum((-2, -1)) + gb.square().sum(-1)).numpy()


def _label_loss(label: str, c: int = 6) -> float:
    """Exact loss of the regular k-gon critical point a label names, NaN for k < 2."""
    from tms_slt.theory import kgon_solution

    digits = "".join(ch for ch in label if ch.isdigit())
    k = int(digits)
    if not 2 <= k <= c:
        return math.nan
    return kgon_solution(k, c, "auto", label[len(digits) :] or "-").loss


def _exact_llc(label: str | None, c: int = 6) -> float:
    """λ of a k-gon label from `theory.kgon_llc_of_label`, NaN where unknown (kinks,
    saddles)."""
    from tms_slt.theory import kgon_llc_of_label

    lam = None if label is None else kgon_llc_of_label(label, c)
    return math.nan if lam is None else float(lam)


def _claim(found: list[dict], key: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Δloss, ΔLLC (by `key`) and whether each transition has both and meets the claim."""
    dl = np.array([t["delta_loss"] for t in found], dtype=float)
    dlam = np.array([t[key] for t in found], dtype=float)
    both = np.isfinite(dl) & np.isfinite(dlam)
    return dl, dlam, both & (dl < 0) & (dlam > 0)


def _for_figure(ds: xr.Dataset, labels: np.ndarray, plateaus: list[dict]) -> xr.Dataset:
    """The tracked run with the functional labels, and `llc_theory` only on plateaus matched
    to a critical point (the λ of that critical point), NaN elsewhere."""
    lam = np.full(labels.shape, np.nan)
    for p in plateaus:
        if p["match"] is not None:
            lam[p["start"] : p["stop"], _col(ds, p)] = p["llc_exact"]
    dims = ds["kgon"].dims
    return ds.assign(kgon=(dims, labels), llc_theory=(dims, lam))


def sgd_plateaus(ds: xr.Dataset, out: Path) -> Built:
    """Transition frequencies k → k′; the paper's claim (Δloss < 0, ΔLLC > 0) on transitions
    between plateaus matched to critical points (exact λ) and on reliable λ̂; unmatched
    plateaus counted as such; a figure of a few seeds' trajectories and one of the
    statistics."""
    from tms_slt.plots.chen import plot_sgd_plateaus, plot_transition_statistics
    from tms_slt.theory import kgon_loss

    labels = functional_labels(ds)
    plateaus, found = plateau_transitions(ds)
    kinds = [f"{t['before']} → {t['after']}" for t in found]
    ordered = dict(Counter(kinds).most_common())
    matched = np.array(
        [t["matched_before"] is not None and t["matched_after"] is not None for t in found],
        dtype=bool,
    )
    dl, dlam_exact, claim_exact = _claim(found, "delta_llc_exact")
    _, dlam_rel, claim_rel = _claim(found, "delta_llc_reliable")
    both_exact = np.isfinite(dl) & np.isfinite(dlam_exact)
    both_rel = np.isfinite(dl) & np.isfinite(dlam_rel)
    per_seed = Counter(t["instance"] for t in found)
    shown = [i for i, _ in per_seed.most_common(4)] or [int(ds["instance"].values[0])]
    matched_counts = dict(Counter(k for k, m in zip(kinds, matched, strict=True) if m))
    fig_paths = (
        save_figure(
            plot_sgd_plateaus(_for_figure(ds, labels, plateaus), shown),
            out / "figures" / "sgd_plateaus.png",
        ),
        save_figure(
            plot_transition_statistics(
                ordered,
                matched_counts,
                np.array([ds["checkpoint"].values[p["representative"]] for p in plateaus]),
                np.array([p["point_loss"] / _label_loss(p["label"]) for p in plateaus]),
                np.array([p["match"] is not None for p in plateaus], dtype=bool),
            ),
            out / "figures" / "sgd_transition_statistics.png",
        ),
    )
    by_kind: dict[str, list[int]] = {}
    for k, m, e_ok, e_c, r_ok, r_c in zip(
        kinds, matched, both_exact, claim_exact, both_rel, claim_rel, strict=True
    ):
        entry = by_kind.setdefault(k, [0, 0, 0, 0, 0, 0])
        for i, v in enumerate((1, m, e_ok, e_c, r_ok, r_c)):
            entry[i] += int(v)
    rows = [
        [k, v[0], v[1], f"{v[3]} of {v[2]}" if v[2] else "—", f"{v[5]} of {v[4]}" if v[4] else "—"]
        for k, v in sorted(by_kind.items(), key=lambda kv: -kv[1][0])
    ]
    final = Counter(str(v) for v in labels[-1])
    last = {}
    for p in plateaus:
        last[p["instance"]] = p  # the last plateau of each seed
    final_matched = Counter(p["match"] or "unmatched" for p in last.values())
    matched_last = sum(p["match"] is not None for p in last.values())
    loss = ds["loss"].values
    six = labels == "6"
    five_minus = labels == "5-"
    n_match = sum(p["match"] is not None for p in plateaus)
    unmatched_reasons = Counter(_reason_kind(p["reason"]) for p in plateaus if p["match"] is None)
    L6, L5m = kgon_loss(6, 6), kgon_loss(5, 6, variant="-")
    numbers = {
        "seeds": int(ds.sizes["instance"]),
        "transitions": len(found),
        "plateaus": len(plateaus),
        "plateaus_matched": n_match,
        "plateaus_matched_last": matched_last,
        "plateaus_matched_by_label": dict(
            Counter(p["match"] for p in plateaus if p["match"] is not None).most_common()
        ),
        "unmatched_reasons": dict(unmatched_reasons.most_common()),
        "transitions_matched": int(matched.sum()),
        "with_exact_llc": int(both_exact.sum()),
        "claim_exact": int(claim_exact.sum()),
        "exact_llc_unchanged": int((both_exact & (dlam_exact == 0)).sum()),
        "exact_llc_down": int((both_exact & (dlam_exact < 0)).sum()),
        "loss_up_matched": int((both_exact & (dl >= 0)).sum()),
        "with_reliable_deltas": int(both_rel.sum()),
        "claim_reliable": int(claim_rel.sum()),
        "loss_down_fraction": float((dl < 0).sum() / np.isfinite(dl).sum()) if found else math.nan,
        "six_checkpoints": int(six.sum()),
        "six_near_6gon": float((np.abs(loss[six] - L6) <= LOSS_RTOL * L6).mean())
        if six.any()
        else math.nan,
        "step0_labels": dict(Counter(str(v) for v in labels[0]).most_common(3)),
        "five_minus_checkpoints": int(five_minus.sum()),
        "five_minus_far": float((loss[five_minus] > 2 * L5m).mean())
        if five_minus.any()
        else math.nan,
        "five_minus_old_rule": int((ds["kgon"].values == "5-").sum()),
        "five_minus_old_rule_far": float((loss[ds["kgon"].values == "5-"] > 2 * L5m).mean())
        if (ds["kgon"].values == "5-").any()
        else math.nan,
        "loss_rtol": LOSS_RTOL,
        "top_transitions": dict(list(ordered.items())[:8]),
        "final_configurations": dict(final.most_common()),
        "final_matched": dict(final_matched.most_common()),
        "shown_seeds": shown,
    }
    text = (
        f"# Dynamical transitions in SGD ({ds.sizes['instance']} seeds, c = 6)\n\n"
        "Generated by `tms-slt figures chen2023` from `paper/data/chen2023/sgd_plateaus` "
        "(`experiments/chen2023/sgd_plateaus.py`). A plateau: a stage of the debounced k-gon "
        "label (recomputed from the saved W, b with the functional dead-column rule; the "
        "detector's flicker filter, 2 checkpoints). It is *matched* to a critical point when "
        "its checkpoint of least ‖∇L‖ refines (Levenberg–Marquardt on ‖∇L‖², exact loss) to a "
        f"regular k-gon critical point nearby, with the plateau's loss within {LOSS_RTOL:.0%} "
        "of it (`transitions.critical.match_critical_points`). Δloss: difference of the "
        "plateau medians of the loss. Δλ: of the exact λ of the matched critical points "
        "(`theory.kgon_llc`, known for 6, 5±), or of the plateau medians of the reliable λ̂ "
        "(a plateau at a saddle, on a ReLU kink or still descending has none).\n\n"
        + table(
            [
                "transition",
                "count",
                "both plateaus matched",
                "Δloss < 0, Δλ > 0 (matched, exact λ)",
                "Δloss < 0, ΔLLC > 0 (reliable λ̂ on both)",
            ],
            rows,
        )
        + f"\nAll transitions: {len(found)} between {len(plateaus)} plateaus, of which "
        f"{n_match} are matched to a critical point ("
        + ", ".join(f"{k}: {v}" for k, v in numbers["plateaus_matched_by_label"].items())
        + "); unmatched, by reason: "
        + ", ".join(f"{k}: {v}" for k, v in unmatched_reasons.most_common())
        + f". Transitions with both plateaus matched: {int(matched.sum())}; with both λ "
        f"known: {int(both_exact.sum())}, of which {int(claim_exact.sum())} lower the loss "
        f"and raise λ, {numbers['exact_llc_unchanged']} leave λ unchanged and "
        f"{numbers['exact_llc_down']} lower it. With reliable λ̂ on both plateaus: "
        f"{int(claim_rel.sum())} of {int(both_rel.sum())}.\n\n"
        "Final configurations (label at the last checkpoint): "
        + ", ".join(f"{k}: {v}" for k, v in final.most_common())
        + "; the last plateau's critical point: "
        + ", ".join(f"{k}: {v}" for k, v in final_matched.most_common())
        + ".\n"
    )
    table_path = atomic_write_text(out / "tables" / "sgd_plateaus.md", text)
    return Built((*fig_paths, table_path), numbers)


def _reason_kind(reason: str) -> str:
    """The condition of a `CriticalMatch.reason`, without its numbers."""
    for key, name in (
        ("did not reach", "no critical point reached"),
        ("away", "critical point too far"),
        ("not a regular", "critical point not a regular k-gon"),
        ("is not the", "critical point not a k-gon of that label"),
        ("not within", "loss too far from the critical point's"),
        ("near-regular", "plateau geometry not regular"),
    ):
        if key in reason:
            return name
    return reason
