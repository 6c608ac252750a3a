"""The SGD-plateau part of the Chen et al. 2023 reproduction: plateau sequences, transition
statistics, figures and table, from saved results."""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path

import numpy as np
import xarray as xr

from tms_slt.io import atomic_write_text, save_figure
from tms_slt.paper.common import Built, table


def plateau_transitions(ds: xr.Dataset) -> list[dict]:
    """Every seed's plateau sequence (debounced k-gon labels) and, between consecutive
    plateaus, the transition k → k′ with Δloss and ΔLLC: differences of the plateau medians
    of the loss and of λ̂, the latter twice: over every estimate (``delta_llc``, as Chen et
    al. report it) and over the reliable ones only (``delta_llc_reliable``, NaN when a
    plateau has none: a plateau at a saddle or on a ReLU kink has no LLC to estimate)."""
    from tms_slt.transitions.dynamical import plateau_segments

    out = []
    for inst in ds["instance"].values:
        part = ds.sel(instance=inst)
        loss, llc = part["loss"].values, part["llc_mean"].values
        reliable = part["llc_reliable"].values.astype(bool)
        segments = plateau_segments(part["kgon"].values)
        stats = []
        for a, b, label in segments:
            good = reliable[a:b]
            stats.append(
                (
                    label,
                    float(np.median(loss[a:b])),
                    float(np.median(llc[a:b])),
                    float(np.median(llc[a:b][good])) if good.any() else math.nan,
                )
            )
        for before, after, (a, _, _) in zip(stats[:-1], stats[1:], segments[1:], strict=True):
            out.append(
                {
                    "instance": int(inst),
                    "step": int(part["checkpoint"].values[a]),
                    "before": before[0],
                    "after": after[0],
                    "delta_loss": after[1] - before[1],
                    "delta_llc": after[2] - before[2],
                    "delta_llc_reliable": after[3] - before[3],
                    "delta_llc_exact": _exact_llc(after[0]) - _exact_llc(before[0]),
                }
            )
    return out


def _exact_llc(label: str, c: int = 6) -> float:
    """λ of a k-gon label from `theory.kgon_llc_of_label`, NaN where unknown (kinks,
    saddles)."""
    from tms_slt.theory import kgon_llc_of_label

    lam = kgon_llc_of_label(label, c)
    return math.nan if lam is None else float(lam)


def _claim(found: list[dict], key: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Δloss, ΔLLC (by `key`) and whether each transition has both and meets the claim."""
    dl = np.array([t["delta_loss"] for t in found], dtype=float)
    dlam = np.array([t[key] for t in found], dtype=float)
    both = np.isfinite(dl) & np.isfinite(dlam)
    return dl, dlam, both & (dl < 0) & (dlam > 0)


def sgd_plateaus(ds: xr.Dataset, out: Path) -> Built:
    """Transition frequencies k → k′, the fraction with Δloss < 0 and ΔLLC > 0, a figure of
    a few seeds' trajectories and one of the statistics."""
    from tms_slt.plots.chen import plot_sgd_plateaus, plot_transition_statistics

    found = plateau_transitions(ds)
    ordered = dict(Counter(f"{t['before']} → {t['after']}" for t in found).most_common())
    dl, dlam, claim = _claim(found, "delta_llc")
    _, dlam_rel, claim_rel = _claim(found, "delta_llc_reliable")
    _, dlam_exact, claim_exact = _claim(found, "delta_llc_exact")
    both_exact = np.isfinite(dl) & np.isfinite(dlam_exact)
    flat_exact = both_exact & (dlam_exact == 0)
    both = np.isfinite(dl) & np.isfinite(dlam)
    both_rel = np.isfinite(dl) & np.isfinite(dlam_rel)
    per_seed = Counter(t["instance"] for t in found)
    shown = [i for i, _ in per_seed.most_common(4)] or [int(ds["instance"].values[0])]
    fig_paths = (
        save_figure(plot_sgd_plateaus(ds, shown), out / "figures" / "sgd_plateaus.png"),
        save_figure(
            plot_transition_statistics(ordered, dl, dlam),
            out / "figures" / "sgd_transition_statistics.png",
        ),
    )
    by_kind: dict[str, list[int]] = {}
    for t, c, r_ok, r_c in zip(found, claim, both_rel, claim_rel, strict=True):
        entry = by_kind.setdefault(f"{t['before']} → {t['after']}", [0, 0, 0, 0])
        entry[0] += 1
        entry[1] += int(c)
        entry[2] += int(r_ok)
        entry[3] += int(r_c)
    rows = [
        [k, v[0], f"{v[1]} ({v[1] / v[0]:.0%})", v[2], f"{v[3]}" if v[2] else "—"]
        for k, v in sorted(by_kind.items(), key=lambda kv: -kv[1][0])
    ]
    final = Counter(str(v) for v in ds["kgon"].isel(checkpoint=-1).values)
    loss_down = np.isfinite(dl) & (dl < 0)

    def frac(num: np.ndarray, den: np.ndarray) -> float:
        return float(num.sum() / den.sum()) if den.any() else math.nan

    numbers = {
        "seeds": int(ds.sizes["instance"]),
        "transitions": len(found),
        "with_both_deltas": int(both.sum()),
        "claim_fraction": frac(claim, both),
        "llc_up_fraction": frac(both & (dlam > 0), both),
        "with_reliable_deltas": int(both_rel.sum()),
        "claim_fraction_reliable": frac(claim_rel, both_rel),
        "with_exact_llc": int(both_exact.sum()),
        "claim_fraction_exact": frac(claim_exact, both_exact),
        "exact_llc_unchanged": int(flat_exact.sum()),
        "loss_down_fraction": frac(loss_down, np.isfinite(dl)),
        "top_transitions": dict(list(ordered.items())[:8]),
        "final_configurations": dict(final.most_common()),
        "shown_seeds": shown,
    }
    text = (
        f"# Dynamical transitions in SGD ({ds.sizes['instance']} seeds, c = 6)\n\n"
        "Generated by `tms-slt figures chen2023` from `paper/data/chen2023/sgd_plateaus` "
        "(`experiments/chen2023/sgd_plateaus.py`). A plateau: a stage of the debounced k-gon "
        "label (the detector's flicker filter, 2 checkpoints); Δloss and ΔLLC: differences of "
        "the plateau medians of the loss and of λ̂ (of every estimate, as Chen et al. report "
        "it, and of the reliable ones only: a plateau at a saddle or on a ReLU kink has no "
        "LLC, and its estimates are flagged).\n\n"
        + table(
            [
                "transition",
                "count",
                "Δloss < 0 and ΔLLC > 0 (all λ̂)",
                "with reliable λ̂ on both plateaus",
                "of those, Δloss < 0 and ΔLLC > 0",
            ],
            rows,
        )
        + f"\nAll transitions: {len(found)}. With every λ̂ (as the paper): "
        f"{int(claim.sum())} of {int(both.sum())} ({numbers['claim_fraction']:.0%}) lower the "
        f"loss and raise the LLC. With reliable λ̂ on both plateaus: {int(claim_rel.sum())} of "
        f"{int(both_rel.sum())}. With the exact λ of both plateaus' k-gons (`theory.kgon_llc`, "
        f"known for 6, 5±): {int(claim_exact.sum())} of {int(both_exact.sum())}, and "
        f"{int(flat_exact.sum())} leave λ unchanged. The loss falls across "
        f"{numbers['loss_down_fraction']:.0%} of all transitions.\n\n"
        "Final configurations: " + ", ".join(f"{k}: {v}" for k, v in final.most_common()) + ".\n"
    )
    table_path = atomic_write_text(out / "tables" / "sgd_plateaus.md", text)
    return Built((*fig_paths, table_path), numbers)
