"""Figures, tables and the write-up of the moving-distribution study (issue #13), from saved
results (`experiments/moving-distribution/tracking.py`).

Every run follows one configuration change: k, the number of features with ‖W_i‖ > 0.5,
reaching PENTAGON. In each setting a high value of the moving parameter (the sparsity S of
Elhage et al.'s n = 5 model, the importance decay r of Chen et al.'s c = 6 setting) favours
the pentagon. An "up" run starts at the low end and ramps up and back; a "down" run starts at
the pentagon's end and ramps down and back; "held" steps up and stays.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import xarray as xr

from tms_slt.io import atomic_write_text, save_figure
from tms_slt.paper.common import QUICK_NOTE, Built, table, wall_time

#: The configuration change followed: k represented features reaching 5.
PENTAGON = 5
#: How the write-ups name each setting's moving parameter.
SYMBOL = {"sparsity": "S", "importance_decay": "r"}
TITLE = {
    "n5": "Elhage et al.'s n = 5, m = 2 model, sparsity S moving (importance 0.9^i)",
    "c6": "Chen et al.'s c = 6 setting (one active feature), importance decay r moving",
}


def static_transition(ds: xr.Dataset, setting: str) -> float:
    """v* where the median final k first reaches PENTAGON on the static grid (ascending) and
    stays, the geometric midpoint of the grid points around it (in the density 1 − S for
    sparsity); NaN if the highest value does not reach it."""
    k = ds[f"{setting}_static_k"].isel(static_checkpoint=-1).median("seed").values
    v = ds[f"{setting}_value"].values
    above = k >= PENTAGON
    if not above[-1]:
        return math.nan
    below = np.flatnonzero(~above)
    if not below.size:
        return float(v[0])
    a, b = v[below[-1]], v[below[-1] + 1]
    if ds.attrs[f"{setting}_parameter"] == "sparsity":
        return float(1 - math.sqrt((1 - a) * (1 - b)))
    return float(math.sqrt(a * b))


def plateau_time(ds: xr.Dataset, setting: str, v_star: float) -> float:
    """Median over seeds at the static values ≥ v* of the first step from which k stays at
    its final value: how long training takes to settle when the distribution is held."""
    if math.isnan(v_star):
        return math.nan
    values = ds[f"{setting}_value"]
    k = ds[f"{setting}_static_k"].sel({f"{setting}_value": values >= v_star}).values
    steps = ds["static_checkpoint"].values
    times = []
    for j in range(k.shape[1]):
        for r in range(k.shape[2]):
            series = k[:, j, r]
            off = np.flatnonzero(series != series[-1])
            times.append(steps[off[-1] + 1] if off.size else steps[0])
    return float(np.median(times))


def crossings(ds: xr.Dataset, run: str, warmup: int) -> list[dict]:
    """Per instance: where the pentagon membership (k ≥ PENTAGON) first changes from its state
    at the ramp's start on the way out (to the ramp's far end), and where it first changes
    back after that (None where it does not), with the parameter value and step of each."""
    step = ds[f"{run}_checkpoint"].values
    v = ds[f"{run}_schedule_value"].values
    ramp = np.flatnonzero(step >= warmup)
    first = ramp[0]
    far = np.abs(v - v[first])
    turn = int(ramp[np.argmax(far[ramp])])
    if far[ramp].max() == 0 or np.isclose(v[-1], v[turn]):  # held: no way back
        turn = int(ramp[-1])
    out = []
    for inst in ds["instance"].values:
        k = ds[f"{run}_k"].sel(instance=inst).values
        member = k >= PENTAGON
        index = np.arange(len(k))
        leg = np.flatnonzero((index >= first) & (index <= turn) & (member != member[first]))
        i_out = int(leg[0]) if leg.size else None
        i_back = None
        if i_out is not None:
            back = np.flatnonzero((index > max(turn, i_out)) & (member == member[first]))
            i_back = int(back[0]) if back.size else None
        out.append(
            {
                "instance": int(inst),
                "pentagon_at_start": bool(member[first]),
                "k_at_start": int(k[first]),
                "k_at_turn": int(k[turn]),
                "value_out": None if i_out is None else float(v[i_out]),
                "step_out": None if i_out is None else int(step[i_out]),
                "value_back": None if i_back is None else float(v[i_back]),
                "step_back": None if i_back is None else int(step[i_back]),
            }
        )
    return out


def _median(values: list) -> float:
    kept = [x for x in values if x is not None]
    return float(np.median(kept)) if kept else math.nan


def run_numbers(ds: xr.Dataset, run: str, cycle: int, v_star: float, tau: float) -> dict:
    """What the table and write-up say about one run."""
    setting, direction, speed = run.split("_")
    warmup = int(ds.attrs["warmup"])
    # An up run follows instances that start off the pentagon, a down run those on it.
    every = crossings(ds, run, warmup)
    found = [c for c in every if c["pentagon_at_start"] == (direction == "down")]
    v_out = _median([c["value_out"] for c in found])
    v_back = _median([c["value_back"] for c in found])
    return {
        "setting": setting,
        "direction": direction,
        "speed": speed,
        "cycle": cycle,
        "half_cycle_over_tau": cycle / 2 / tau if tau else math.nan,
        "instances": int(ds.sizes["instance"]),
        "followed": len(found),
        "k_at_start": [c["k_at_start"] for c in every],
        "k_at_turn": [c["k_at_turn"] for c in every],
        "changed": sum(c["value_out"] is not None for c in found),
        "returned": sum(c["value_back"] is not None for c in found),
        "value_out": v_out,
        "value_back": v_back,
        "lag": v_out - v_star,
        "width": abs(v_out - v_back),
        "steps_out": [c["step_out"] - warmup for c in found if c["step_out"] is not None],
        "steps_past": _steps_past(ds, run, v_star, direction),
        "driver_agreement": _driver_agreement(ds, run, warmup, cycle),
    }


def tracking(ds: xr.Dataset, out: Path) -> Built:
    """The tracking figure (the run with λ̂), the hysteresis loops of both settings, and a
    table of v*, τ and, per run, the crossings, lags, loop widths and the detector's drivers."""
    from tms_slt.plots.moving import plot_hysteresis, plot_tracking

    runs = [str(r) for r in _attr_list(ds, "runs")]
    cycles = [int(c) for c in _attr_list(ds, "cycles")]
    settings = sorted({r.split("_")[0] for r in runs}, key=["n5", "c6"].index)
    numbers: dict = {"settings": {}, "runs": {}}
    for name in settings:
        v_star = static_transition(ds, name)
        numbers["settings"][name] = {
            "parameter": str(ds.attrs[f"{name}_parameter"]),
            "low": float(ds.attrs[f"{name}_low"]),
            "high": float(ds.attrs[f"{name}_high"]),
            "v_star": v_star,
            "tau": plateau_time(ds, name, v_star),
        }
    for run, cycle in zip(runs, cycles, strict=True):
        s = numbers["settings"][run.split("_")[0]]
        numbers["runs"][run] = run_numbers(ds, run, cycle, s["v_star"], s["tau"])
    shown = next((r for r in runs if f"{r}_llc_mean" in ds), runs[0])
    symbols = {name: SYMBOL[s["parameter"]] for name, s in numbers["settings"].items()}
    figs = (
        save_figure(
            plot_tracking(
                ds,
                shown,
                symbols[shown.split("_")[0]],
                llc_shown=near_minimum(ds, shown) if f"{shown}_llc_mean" in ds else None,
            ),
            out / "figures" / "moving_distribution.png",
        ),
        save_figure(
            plot_hysteresis(ds, settings, runs, int(ds.attrs["warmup"]), symbols),
            out / "figures" / "hysteresis.png",
        ),
    )
    numbers["llc"] = _llc_numbers(ds, shown)
    numbers["warning"] = warning_numbers(ds, shown, int(ds.attrs["warmup"]))
    table_path = atomic_write_text(
        out / "tables" / "moving_distribution.md", _table(numbers, symbols)
    )
    return Built((*figs, table_path), numbers)


def _table(numbers: dict, symbols: dict[str, str]) -> str:
    rows = []
    for v in numbers["runs"].values():
        sym = symbols[v["setting"]]
        s = numbers["settings"][v["setting"]]
        rows.append(
            [
                v["setting"],
                v["direction"],
                v["speed"],
                "—" if v["speed"] == "held" else v["cycle"] // 2,
                "—" if v["speed"] == "held" else _fmt(v["half_cycle_over_tau"], ".1f"),
                f"{sym}* = {_fmt(s['v_star'], '.3f')}",
                f"{v['followed']} / {v['instances']}",
                _fmt(v["value_out"], ".3f"),
                "—" if v["speed"] == "held" else _fmt(v["lag"], "+.3f"),
                _fmt(v["value_back"], ".3f"),
                _fmt(v["width"], ".3f"),
                f"{v['changed']} / {v['returned']}",
                _fmt(v["driver_agreement"], ".0%"),
            ]
        )
    return (
        "# Tracking the static phase diagram while the distribution moves\n\n"
        "Generated by `tms-slt figures moving-distribution` from "
        "`paper/data/moving-distribution/tracking` "
        "(`experiments/moving-distribution/tracking.py`). The configuration change followed: "
        f"k (features with ‖W_i‖ > 0.5) reaching {PENTAGON}, the pentagon. Static: the value "
        "v* where the median k over seeds reaches 5 with the distribution held. Moving runs "
        "(medians over instances): *out*, where k ≥ 5 first changes from its state at the "
        "ramp's start on the way to the far end (up runs: the pentagon appears; down runs: it "
        "is lost); lag = out − v*; *back*, where it changes back on the return; loop width "
        "|out − back|; changed / returned: instances with an out and a back crossing; "
        "followed: the instances that start on the run's side (up: k < 5, down: k ≥ 5 when "
        "the ramp begins). Driver: the fraction "
        "of the detector's transitions whose `driver` matches the design (schedule inside the "
        "ramp, learning in the warm-up).\n\n"
        + table(
            [
                "setting",
                "direction",
                "speed",
                "half cycle (steps)",
                "half cycle / τ",
                "static",
                "followed",
                "out",
                "lag",
                "back",
                "loop width",
                "changed / returned",
                "driver",
            ],
            rows,
        )
    )


#: Refining a checkpoint to the nearest minimum of L_n keeps its configuration when WᵀW
#: changes by less than this (and the represented count is the same).
SAME_CONFIGURATION = 0.1


def near_minimum(ds: xr.Dataset, run: str) -> np.ndarray:
    """(checkpoint, instance) True where λ̂ was estimated and the nearest minimum of L_n has
    the checkpoint's configuration: the same k and WᵀW within SAME_CONFIGURATION."""
    p = f"{run}_"
    return np.isfinite(ds[p + "llc_mean"].values) & keeps_configuration(
        ds[p + "k"].values, ds[p + "anchor_k"].values, ds[p + "anchor_gram_change"].values
    )


def keeps_configuration(k, anchor_k, gram_change) -> np.ndarray:
    """Where refining a checkpoint (k represented features) to the nearest minimum of L_n
    (anchor_k, and WᵀW moved by gram_change) kept its configuration."""
    return (np.asarray(anchor_k) == np.asarray(k)) & (np.asarray(gram_change) < SAME_CONFIGURATION)


def _llc_numbers(ds: xr.Dataset, run: str) -> dict:
    """λ̂ along the run with LLC estimates: where the checkpoint sits near a minimum of its own
    L_n, λ̂ there by k and how many are reliable (and the commonest flag of the others);
    where it does not, how much loss the descent to a minimum shed."""
    p = f"{run}_"
    if p + "llc_mean" not in ds:
        return {}
    llc = ds[p + "llc_mean"].values
    done = np.isfinite(llc)
    near = near_minimum(ds, run)
    rel = ds[p + "llc_reliable"].values.astype(bool) & near
    k = ds[p + "k"].values
    by_k = {
        int(kk): [float(np.median(llc[near & (k == kk)])), int((near & (k == kk)).sum())]
        for kk in np.unique(k[near])
    }
    flags = [
        part.split(":")[0].strip()
        for text in ds[p + "llc_reasons"].values[near & ~rel]
        for part in str(text).split(";")
        if part.strip()
    ]
    common = max(set(flags), key=flags.count) if flags else ""
    far = done & ~near
    return {
        "run": run,
        "samples": int(ds.attrs["llc_samples"]),
        "estimates": int(done.sum()),
        "near_minimum": int(near.sum()),
        "reliable": int(rel.sum()),
        "median_by_k": by_k,
        "commonest_flag": common,
        "commonest_flag_count": flags.count(common) if flags else 0,
        "not_near_k": sorted({int(v) for v in k[far]}),
        "loss_drop": float(np.median(ds[p + "anchor_loss_drop"].values[far]))
        if far.any()
        else math.nan,
        "loss_drop_near": float(np.median(ds[p + "anchor_loss_drop"].values[near]))
        if near.any()
        else math.nan,
    }


def warning_numbers(ds: xr.Dataset, run: str, warmup: int) -> list[dict]:
    """Per instance that changes configuration during the ramp: the susceptibility χ at the
    checkpoints near a minimum between the ramp's start and the change, first and last, and
    where |χ| was largest; does it rise toward the change (by more than 2 SE)?"""
    p = f"{run}_"
    if p + "chi" not in ds:
        return []
    near = near_minimum(ds, run) & np.isfinite(ds[p + "chi"].values)
    step = ds[p + "checkpoint"].values
    value = ds[p + "schedule_value"].values
    out = []
    for c in crossings(ds, run, warmup):
        if c["step_out"] is None:
            continue
        i = int(c["instance"])
        before = np.flatnonzero(near[:, i] & (step >= warmup) & (step < c["step_out"]))
        if before.size < 2:
            continue
        chi = ds[p + "chi"].values[before, i]
        se = ds[p + "chi_se"].values[before, i]
        peak = int(np.argmax(np.abs(chi)))
        rise = abs(chi[-1]) - abs(chi[0])
        out.append(
            {
                "instance": i,
                "estimates": int(before.size),
                "first": [float(value[before[0]]), float(chi[0]), float(se[0])],
                "last": [float(value[before[-1]]), float(chi[-1]), float(se[-1])],
                "peak_value": float(value[before[peak]]),
                "change_value": float(c["value_out"]),
                "rises": bool(rise > 2 * math.hypot(se[0], se[-1])),
            }
        )
    return out


def _fmt(value: float, spec: str) -> str:
    """A number, or "never" where the crossing it comes from did not happen."""
    return "never" if math.isnan(value) else format(value, spec)


def _steps_past(ds: xr.Dataset, run: str, v_star: float, direction: str) -> int:
    """How many steps the stored schedule keeps the parameter past v* on the far side from
    where the run started: above v* for up runs, below it for down runs."""
    from tms_slt.schedules import DistributionSchedule

    if math.isnan(v_star):
        return 0
    ramp = DistributionSchedule.from_dict(json.loads(ds.attrs[f"{run}_schedule"])).ramps[0]
    last = int(ds[f"{run}_checkpoint"].values[-1])
    sign = 1.0 if direction == "up" else -1.0
    return int(sum(sign * (float(ramp.value_at(t)) - v_star) > 0 for t in range(last + 1)))


def _attr_list(ds: xr.Dataset, key: str) -> list:
    """A list attribute, which netCDF stores as its JSON text."""
    value = ds.attrs[key]
    return json.loads(value) if isinstance(value, str) else list(np.atleast_1d(value))


def _driver_agreement(ds: xr.Dataset, run: str, warmup: int, cycle: int) -> float:
    """Fraction of the detector's transitions whose driver is the design's: "schedule"
    inside a window where q moves (to 2 checkpoints after it, the detector's
    `schedule_lag`), "learning" elsewhere. A held step moves q only at its step."""
    p = f"{run}_transition_"
    if p + "location" not in ds or ds.sizes.get(f"{run}_transition", 0) == 0:
        return math.nan
    loc = ds[p + "location"].values.astype(float)
    driver = ds[p + "driver"].values.astype(str)
    steps = ds[f"{run}_checkpoint"].values
    finish = warmup if run.endswith("_held") else warmup + cycle
    after = np.flatnonzero(steps >= finish)
    end = steps[min(after[0] + 2, len(steps) - 1)] if after.size else finish
    expected = np.where((loc >= warmup) & (loc <= end), "schedule", "learning")
    return float((driver == expected).mean())


def _verdict(v: dict, s: dict, sym: str) -> str:
    """One sentence on one run, from its numbers."""
    tau, past = s["tau"], v["steps_past"]
    stay = f"{past} steps ({past / tau:.0f} τ)" if tau > 0 else f"{past} steps"
    side = "on" if v["direction"] == "down" else "off"
    if not v["followed"]:
        return (
            f"no instance is {side} the pentagon when the ramp begins (k: {v['k_at_start']}), "
            "so there is nothing to follow."
        )
    followed = (
        f" ({v['followed']} of {v['instances']} instances start {side} it)"
        if v["followed"] < v["instances"]
        else ""
    )
    if v["direction"] == "up" and v["speed"] == "held":
        if not v["changed"]:
            return (
                f"no instance reaches the pentagon in {stay} at {sym} = {s['high']:g}: it sticks."
            )
        waits = ", ".join(f"{t} ({t / tau:.0f} τ)" for t in v["steps_out"])
        return (
            f"{v['changed']} of {v['followed']} instances reach the pentagon, after {waits} "
            f"steps; the other {v['followed'] - v['changed']} do not in {stay}{followed}. From "
            f"a random start it takes τ = {tau:.0f}."
        )
    if v["direction"] == "up":
        if not v["changed"]:
            return (
                f"no instance reaches the pentagon, although {sym} stays above {sym}* for "
                f"{stay}{followed}: it sticks (k at the ramp's start {v['k_at_start']}, at its "
                f"far end {v['k_at_turn']})."
            )
        text = (
            f"{v['changed']} of {v['followed']}{followed} reach the pentagon, at {sym} = "
            f"{v['value_out']:.3f} (lag {_fmt(v['lag'], '+.3f')} from {sym}*); "
        )
    else:
        if not v["changed"]:
            return (
                f"the pentagon survives the whole ramp{followed}, although {sym} stays below "
                f"{sym}* for {stay}: it sticks."
            )
        text = (
            f"{v['changed']} of {v['followed']}{followed} lose the pentagon, at {sym} = "
            f"{v['value_out']:.3f} (lag {_fmt(v['lag'], '+.3f')} from {sym}*); "
        )
    if not v["returned"]:
        return text + "none changes back on the return: it sticks on the other side."
    return text + (
        f"{v['returned']} change back, at {sym} = {v['value_back']:.3f}: a loop of width "
        f"{v['width']:.3f}."
    )


def _warning_text(found: list[dict], llc: dict) -> str:
    if not llc:
        return ""
    head = (
        "\n**Does the LLC warn?** The susceptibility χ = −nβ Cov(L_n, ∂_S L_n) of the local "
        "posterior (Baker et al. 2025; `sampling.susceptibility`), at the same checkpoints: "
    )
    if not found:
        return head + "no instance has two estimates near a minimum before it changes.\n"
    rows = [
        f"instance {f['instance']}: χ = {f['first'][1]:.2f} ± {f['first'][2]:.2f} at S = "
        f"{f['first'][0]:.3f}, {f['last'][1]:.2f} ± {f['last'][2]:.2f} at S = "
        f"{f['last'][0]:.3f} (largest |χ| at S = {f['peak_value']:.3f}; the pentagon is lost "
        f"at S = {f['change_value']:.3f})"
        for f in found
    ]
    rising = sum(f["rises"] for f in found)
    verdict = (
        f"|χ| rises toward the change by more than 2 SE in {rising} of {len(found)} instances"
        + (": a warning." if rising == len(found) else "." if rising else ": no warning.")
    )
    return head + "; ".join(rows) + ". " + verdict + "\n"


def _llc_text(llc: dict) -> str:
    near, total = llc["near_minimum"], llc["estimates"]
    by_k = ", ".join(f"k = {k}: {m:.2f} ({c})" for k, (m, c) in llc["median_by_k"].items())
    text = (
        f"**λ̂ along {llc['run'].replace('_', ' ')}** (every 4th checkpoint, on "
        f"{llc['samples']} draws from the checkpoint's own q_t, at the minimum of L_n nearest "
        f"the checkpoint). {near} of {total} checkpoints sit near a minimum of their own "
        f"L_n: refining them keeps k and moves WᵀW by less than {SAME_CONFIGURATION} (median "
        f"loss shed {_fmt(llc['loss_drop_near'], '.2g')})."
    )
    if total > near:
        text += (
            f" At the other {total - near} (k ∈ {llc['not_near_k']}) the descent leaves the "
            f"configuration and sheds a median {_fmt(llc['loss_drop'], '.2g')} of loss: those "
            "checkpoints are slow plateaus of Adam, not minima, and get no λ̂ (the figure "
            "leaves them out)."
        )
    if near:
        text += f" λ̂ at the former, median by k (count): {by_k or 'none'}; {llc['reliable']} "
        text += "reliable"
        if llc["commonest_flag"]:
            text += (
                f", the others flagged, most often “{llc['commonest_flag']}” "
                f"({llc['commonest_flag_count']})"
            )
        text += "."
    return text + "\n"


def write_up(built: dict[str, Built], meta: dict[str, dict]) -> str:
    tr = built["tracking"].numbers
    quick = any(m.get("quick") for m in meta.values())
    sections = []
    for name, s in tr["settings"].items():
        sym = SYMBOL[s["parameter"]]
        bullets = "\n".join(
            f"- **{v['direction']}, {v['speed']}**"
            + ("" if v["speed"] == "held" else f" (half cycle {v['half_cycle_over_tau']:.1f} τ)")
            + f": {_verdict(v, s, sym)} Detector drivers as designed: "
            f"{_fmt(v['driver_agreement'], '.0%')}."
            for v in tr["runs"].values()
            if v["setting"] == name
        )
        sections.append(
            f"### {TITLE.get(name, name)}\n\n"
            f"**Static.** With {sym} held, the median k reaches 5 at {sym}* = "
            f"{_fmt(s['v_star'], '.3f')}, after τ = {_fmt(s['tau'], '.0f')} steps. The ramps "
            f"run between {sym} = {s['low']:g} and {s['high']:g}.\n\n{bullets}\n"
        )
    llc = tr.get("llc", {})
    llc_text = (_llc_text(llc) if llc else "") + _warning_text(tr.get("warning", []), llc)
    note = QUICK_NOTE if quick else ""
    return f"""# When the true distribution moves: tracking, lag and hysteresis

Generated by `tms-slt figures moving-distribution` from
`paper/data/moving-distribution/tracking` (`experiments/moving-distribution/tracking.py`,
one command; wall time {wall_time(meta, "tracking")}). Every number below is measured from
those results.{note}

**The question.** A TMS layer deep in a network sees a distribution that drifts while it
learns. When the sparsity of Elhage et al.'s n = 5 model, or the importance profile of Chen
et al.'s c = 6 setting, moves and comes back, does the learned geometry follow the static
phase diagram (the configuration training reaches with the distribution held), lag behind
it, or stick? Both are followed through one change: k (‖W_i‖ > 0.5) reaching 5, the pentagon.

![](figures/moving_distribution.png)

![](figures/hysteresis.png)

Table: [tables/moving_distribution.md](tables/moving_distribution.md).

{chr(10).join(sections)}
{llc_text}
**Not done here.** Exact static optima (`theory` has them only for two features in one
dimension), and the susceptibility along the c = 6 importance ramps.
"""
