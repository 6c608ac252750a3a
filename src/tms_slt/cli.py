"""The `tms-slt` command line: each subcommand writes a run directory.

Every command takes --config FILE.toml, --out DIR, --seed and --device, shows
progress bars, and writes config.toml, results.nc and meta.json (plus figures)
into its run directory. Configuration errors stop before any work with one
line naming the field.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import xarray as xr

from tms_slt.config import ConfigError, ExperimentConfig, load_config


class SamplingFailedError(RuntimeError):
    """Every SGLD chain diverged: there is no estimate to report."""


def _progress(args: argparse.Namespace) -> bool:
    """Progress bars unless --quiet, and only on a terminal (no tqdm floods in logs)."""
    return not args.quiet and sys.stderr.isatty()


def _load(args: argparse.Namespace) -> ExperimentConfig:
    """The config: --config (or the default), then --set KEY=VALUE overrides, then --seed and
    --device; validated, with a device this machine has."""
    from tms_slt.config import parse_override, with_overrides

    config = load_config(args.config) if args.config else ExperimentConfig()
    overrides = dict(parse_override(text) for text in getattr(args, "set", None) or [])
    if args.seed is not None:
        overrides["seed"] = args.seed
    if args.device is not None:
        overrides["device"] = args.device
    if overrides:
        config = with_overrides(config, overrides)
    _check_device_available(config.device)
    return config


def _check_device_available(device: str) -> None:
    import torch

    kind = torch.device(device).type
    if kind == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {device!r}: CUDA is not available on this machine; use cpu")
    if kind == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"device {device!r}: MPS is not available on this machine; use cpu")


def _generator(config: ExperimentConfig, stream: str = "train"):
    """The generator of one stream of a run: "train" is seeded with the config's seed; "llc"
    with a seed derived from it, so that the LLC of `quickstart` and of `train` then `llc`
    on the same config are the same chains (quickstart used to run them on the training
    stream's leftovers, and the two disagreed by more than their errors)."""
    import hashlib

    import torch

    seed = config.seed
    if stream != "train":
        digest = hashlib.blake2b(f"{seed}:{stream}".encode(), digest_size=8).digest()
        seed = int.from_bytes(digest, "little") >> 1
    return torch.Generator(device=config.device).manual_seed(seed)


def _out_dir(args: argparse.Namespace, command: str) -> Path:
    from tms_slt.io import default_run_dir

    return _writes_to(args, Path(args.out) if args.out else default_run_dir(command))


def _writes_to(args: argparse.Namespace, out: Path) -> Path:
    """`out`, remembered so that an interrupted command can say what it left there."""
    args.writes_to = out
    return out


#: Transitions at least this confident are printed and count when choosing the instance.
SHOWCASE_CONFIDENCE = 0.5


def _showcase(tracked: xr.Dataset, instance: int | None = None) -> tuple[int, list]:
    """The instance to show and its transitions (confidence ≥ SHOWCASE_CONFIDENCE).

    By default the instance with the most detected configuration changes that lower the
    loss (ties: the lowest index). This only chooses what the figure and tables show;
    every instance is saved. The detector runs once, over all instances.
    """
    from tms_slt.transitions import detect_dynamical

    num = tracked.sizes["instance"]
    found = detect_dynamical(tracked, min_confidence=SHOWCASE_CONFIDENCE)
    if instance is None:
        stages = [t.instance for t in found if t.before != t.after and t.delta_loss < 0]
        instance = int(np.argmax(np.bincount(stages, minlength=num)))
    return instance, [t for t in found if t.instance == instance]


def format_table(tracked: xr.Dataset, instance: int, max_rows: int = 12) -> str:
    """A short text table for one instance: step, loss, λ̂ ± std over chains, λ of the
    k-gon where `theory.kgon_llc` knows it, ‖W‖²_F and the k-gon; "?" marks an estimate the
    diagnostics do not trust (the reasons are in results.nc, `llc_reasons`)."""
    ds = tracked.isel(instance=instance)
    n = ds.sizes["checkpoint"]
    rows = sorted(set(np.linspace(0, n - 1, min(max_rows, n)).round().astype(int).tolist()))
    lines = [
        f"instance {instance} of {tracked.sizes['instance']}",
        f"{'step':>7} {'loss':>9} {'LLC λ̂':>17} {'λ (theory)':>10} {'|W|_F^2':>8} {'k-gon':>7}",
    ]
    for c in rows:
        p = ds.isel(checkpoint=c)
        llc = "-"
        if "llc_mean" in p:
            flag = "" if bool(p.get("llc_reliable", True)) else " ?"
            llc = f"{float(p['llc_mean']):7.2f} ± {float(p['llc_std']):5.2f}{flag:2}"
        theory = float(p["llc_theory"]) if "llc_theory" in p else float("nan")
        theory_text = f"{theory:g}" if np.isfinite(theory) else "-"
        kgon = str(p["kgon"].item()) if "kgon" in p else "-"
        lines.append(
            f"{int(p['checkpoint']):>7} {float(p['loss']):>9.5f} {llc:>17} {theory_text:>10} "
            f"{float(p['feature_count']):>8.3f} {kgon:>7}"
        )
    if "llc_reliable" in ds:
        lines.append("? = unreliable estimate (see llc_reasons in results.nc)")
    return "\n".join(lines)


def _results(trajectory, llc) -> xr.Dataset:
    """Observables (and LLC) plus what `Trajectory.from_xarray` needs to reload the run."""
    from tms_slt.transitions import track

    stored = trajectory.to_xarray()
    extra = stored[[v for v in stored.data_vars if v not in ("W", "b", "loss")]]
    return xr.merge([track(trajectory, llc), extra], combine_attrs="no_conflicts")


def _train_and_track(config: ExperimentConfig, *, with_llc: bool, progress: bool):
    from tms_slt.sampling.llc import estimate_llc
    from tms_slt.training import train

    trajectory = train(config, generator=_generator(config), progress=progress)
    llc = None
    if with_llc:
        llc = estimate_llc(
            trajectory,
            **dataclasses.asdict(config.llc),
            generator=_generator(config, "llc"),
            progress=progress,
        )
    results = _results(trajectory, llc)
    if config.schedule:  # where q moves, for the detector's `driver` (flat begin, finish pairs)
        from tms_slt.schedules import DistributionSchedule

        windows = DistributionSchedule.from_config(config).change_points()
        results.attrs["schedule_change_points"] = [int(v) for w in windows for v in w]
    return trajectory, llc, results


def cmd_quickstart(args: argparse.Namespace) -> int:
    """Train Chen et al.'s TMS (6 features, 2 dims), estimate the LLC at every checkpoint."""
    from tms_slt.io import save_run
    from tms_slt.plots import plot_quickstart
    from tms_slt.transitions import format_transitions

    config = _load(args)
    num = config.train.num_instances
    if args.instance is not None and not 0 <= args.instance < num:
        raise ConfigError(f"--instance must be in [0, {num}), got {args.instance}")
    out = _out_dir(args, "quickstart")
    _refuse_existing(out)
    start = time.perf_counter()
    _, llc, tracked = _train_and_track(config, with_llc=True, progress=_progress(args))
    _stop_if_all_diverged(llc)
    instance, shown = _showcase(tracked, args.instance)
    figure = out / "quickstart.png"
    save_run(
        out,
        tracked,
        config,
        command="quickstart",
        shown_instance=instance,
        traces=_traces(llc),
        figures={figure.name: plot_quickstart(tracked, instance=instance)},
    )
    print(format_table(tracked, instance))
    print(f"\ntransitions of instance {instance} (confidence >= {SHOWCASE_CONFIDENCE}):")
    print(format_transitions(shown))
    divergent = int(llc.num_divergent.sum())
    if divergent:
        print(f"note: {divergent} SGLD chains diverged and were excluded (see results.nc)")
    print(
        f"\ninstance {instance} of {tracked.sizes['instance']}; {time.perf_counter() - start:.1f} s"
    )
    print(f"wrote {out / 'results.nc'}, {out / 'traces.nc'}, {out / 'meta.json'}, {figure}")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    """Train and record observables (no LLC); `tms-slt llc RUN_DIR` adds it later."""
    from tms_slt.io import save_run

    config = _load(args)
    out = _out_dir(args, "train")
    _refuse_existing(out)
    _, _, tracked = _train_and_track(config, with_llc=False, progress=_progress(args))
    save_run(out, tracked, config, command="train")
    print(format_table(tracked, _showcase(tracked)[0]))
    print(f"wrote {out / 'results.nc'}")
    return 0


def _load_run(args: argparse.Namespace):
    """(run directory, config, Trajectory) of a `tms-slt train` run: the config it was
    trained with (its config.toml), with the llc.*, seed and device settings of --config,
    --set, --seed and --device applied; nothing else can change a trained run."""
    from tms_slt.io import CONFIG_FILE, RESULTS_FILE, read_dataset
    from tms_slt.training import Trajectory

    run = Path(args.run_dir)
    if not (run / RESULTS_FILE).exists():
        raise ConfigError(
            f"{run} is not a run directory (no {RESULTS_FILE}); run `tms-slt train` first"
        )
    stored = read_dataset(run / RESULTS_FILE)
    if not (run / CONFIG_FILE).is_file():
        raise ConfigError(
            f"{run / CONFIG_FILE} is missing: `tms-slt {args.command}` needs the config the run "
            f"was trained with (a copy is results.nc's `config` attribute)"
        )
    config = _derived_config(args, load_config(run / CONFIG_FILE))
    try:
        trajectory = Trajectory.from_xarray(stored, config)
    except KeyError as err:
        raise ConfigError(
            f"{run / RESULTS_FILE} holds no trajectory ({err} missing): give the directory of "
            "a `tms-slt train` or `quickstart` run"
        ) from None
    return run, config, trajectory


def _derivable(key: str) -> bool:
    """Whether a run derived from a trained one (`llc`, `calibrate`) can apply `key`: how λ̂
    is estimated, not what was trained."""
    return key.startswith("llc.") or key in ("seed", "device")


def _derived_config(args: argparse.Namespace, trained: ExperimentConfig) -> ExperimentConfig:
    """`trained` with the derivable settings of --config, --set, --seed and --device.

    A data, model, train or schedule key is refused unless it repeats the trained value (so
    passing the run's own config file works): it would be recorded but not computed."""
    from tms_slt.config import (
        check_keys,
        config_to_dict,
        flatten,
        parse_override,
        read_toml,
        with_overrides,
    )

    given = flatten(read_toml(args.config)) if args.config else {}
    given |= dict(parse_override(text) for text in args.set or [])
    given |= {k: v for k, v in (("seed", args.seed), ("device", args.device)) if v is not None}
    check_keys(given)
    recorded = flatten(config_to_dict(trained))
    for key, value in given.items():
        if not _derivable(key) and recorded.get(key) != value:
            raise ConfigError(
                f"{key} = {value!r} cannot apply: `tms-slt {args.command}` works on the model "
                f"as it was trained ({key} = {recorded.get(key)!r}); only llc.*, seed and "
                "device apply here (train a new run to change it)"
            )
    config = with_overrides(trained, {k: v for k, v in given.items() if _derivable(k)})
    _check_device_available(config.device)
    return config


def cmd_llc(args: argparse.Namespace) -> int:
    """Estimate the LLC at every checkpoint of a trained run directory, into a new run
    directory (default RUN_DIR/llc-<time>) that records the run it came from."""
    from tms_slt.io import derived_run_dir, save_run
    from tms_slt.sampling.llc import estimate_llc

    run, config, trajectory = _load_run(args)
    out = _writes_to(args, Path(args.out) if args.out else derived_run_dir(run, "llc"))
    _refuse_existing(out)
    llc = estimate_llc(
        trajectory,
        **dataclasses.asdict(config.llc),
        generator=_generator(config, "llc"),
        progress=_progress(args),
    )
    _stop_if_all_diverged(llc)
    tracked = _results(trajectory, llc)
    save_run(out, tracked, config, command="llc", source=str(run), traces=_traces(llc))
    print(format_table(tracked, _showcase(tracked)[0]))
    print(f"wrote {out / 'results.nc'}, {out / 'traces.nc'}")
    return 0


#: Run directories keep at most this many post-burn-in draws per chain in traces.nc.
TRACE_DRAWS = 500


def _traces(llc):
    return llc.to_inference_data(max_draws=TRACE_DRAWS)


def _refuse_existing(out: Path) -> None:
    """Stop before any work when `out` already holds a run (nothing is overwritten)."""
    from tms_slt.io import RunExistsError, refuse_existing_run

    try:
        refuse_existing_run(out)
    except RunExistsError as err:
        raise ConfigError(str(err)) from None


def _stop_if_all_diverged(llc) -> None:
    """Every chain of every anchor diverged: nothing to report, so stop with what to try."""
    if int((llc.num_divergent < llc.num_chains).sum()) == 0:
        step = llc.calibration.get("step_size")
        at = f" (ε = {float(step.max()):.3g})" if step is not None else ""
        raise SamplingFailedError(
            f"every SGLD chain diverged{at}: lower llc.step_size (or use 'auto'), "
            "or raise llc.localization"
        )


def _calibrate_usage_error(message: str) -> int:
    """A one-line usage error of `tms-slt calibrate` (exit code 2, as argparse's)."""
    print(f"tms-slt calibrate: {message}", file=sys.stderr)
    return 2


def cmd_calibrate(args: argparse.Namespace) -> int:
    """Run a grid of SGLD settings at one checkpoint as one batched run; recommend ε.

    With --benchmark (and no RUN_DIR), run the same grid on potentials with known λ instead
    and report λ̂'s relative error, so the settings can be judged against ground truth.
    """
    if args.benchmark:
        return _calibrate_benchmark(args)
    if args.run_dir is None:
        return _calibrate_usage_error("give RUN_DIR (a `tms-slt train` run) or --benchmark")
    if args.draws is not None or args.chains is not None:
        return _calibrate_usage_error(
            "--draws/--chains apply to --benchmark; a run's config sets them ([llc] table)"
        )
    from tms_slt.io import RESULTS_FILE, derived_run_dir, read_dataset, save_run
    from tms_slt.plots import plot_calibration
    from tms_slt.sampling.calibrate import calibrate_around_auto, format_calibration

    run, config, traj = _load_run(args)
    k = -1 if args.checkpoint is None else args.checkpoint
    if not -len(traj.steps) <= k < len(traj.steps):
        raise ConfigError(
            f"--checkpoint must be in [-{len(traj.steps)}, {len(traj.steps)}), got {k}"
        )
    # A one-checkpoint Trajectory keeps the run's bias setting and the dim names.
    report = calibrate_around_auto(
        traj.take(k),
        step_sizes=args.step_sizes,
        nbeta=config.llc.nbeta,
        localizations=args.localizations,
        num_chains=config.llc.num_chains,
        batch_size=config.llc.batch_size,
        backend=config.llc.backend,
        generator=_generator(config),
        progress=_progress(args),
    )
    stored = read_dataset(run / RESULTS_FILE)
    if "llc_theory" in stored:  # the known λ of the anchors' k-gons, for the figure's line
        report = report.assign(llc_theory=stored["llc_theory"].isel(checkpoint=[k]))
    out = _writes_to(args, Path(args.out) if args.out else derived_run_dir(run, "calibrate"))
    figure = out / "calibrate.png"
    save_run(
        out,
        report,
        config,
        command="calibrate",
        checkpoint=int(traj.steps[k]),
        source=str(run),
        figures={figure.name: plot_calibration(report)},
    )
    print(format_calibration(report))
    print(f"wrote {out / 'results.nc'}, {figure}")
    return 0


def _calibrate_benchmark(args: argparse.Namespace) -> int:
    """`tms-slt calibrate --benchmark`: `calibrate_known` over the ε (nβ, γ) grid, a table
    per model, and whether the ε `recommend_step_size` picks has |relative error| < 10%."""
    import torch

    from tms_slt.io import save_run
    from tms_slt.sampling.benchmark import (
        BENCHMARK_LOCALIZATION,
        BENCHMARK_NBETA,
        BENCHMARK_STEP_SIZES,
        calibrate_known,
        format_benchmark,
    )

    if args.run_dir is not None:
        return _calibrate_usage_error("give RUN_DIR or --benchmark, not both")
    unused = [
        flag
        for flag, value in (
            ("--config", args.config),
            ("--checkpoint", args.checkpoint),
            ("--device", args.device),
        )
        if value is not None
    ]
    if unused:
        return _calibrate_usage_error(
            f"--benchmark runs built-in potentials on the CPU and takes no {', '.join(unused)}"
        )
    # Unset options keep calibrate_known's defaults (4 chains × 2000 draws, 500 burn-in).
    sizes = {} if args.chains is None else {"num_chains": args.chains}
    if args.draws is not None:
        sizes |= {"num_draws": args.draws, "num_burnin": args.draws // 4}
    report = calibrate_known(
        step_sizes=args.step_sizes or BENCHMARK_STEP_SIZES,
        nbetas=args.nbetas or [BENCHMARK_NBETA],
        localizations=args.localizations or [BENCHMARK_LOCALIZATION],
        generator=None if args.seed is None else torch.Generator().manual_seed(args.seed),
        progress=_progress(args),
        **sizes,
    )
    print(format_benchmark(report))
    if args.out:
        # No config.toml: the benchmark does not read an experiment config.
        out = save_run(args.out, report, None, command="calibrate", benchmark=True)
        print(f"wrote {out / 'results.nc'} (benchmark report, no config.toml)")
    return 0


def cmd_detect(args: argparse.Namespace) -> int:
    """Detect phase transitions in a run directory: a table, transitions.json, transitions.png."""
    from tms_slt.io import RESULTS_FILE, derived_run_dir
    from tms_slt.transitions import detect_run, format_transitions

    run = Path(args.run_dir)
    if not (run / RESULTS_FILE).exists():
        raise ConfigError(f"{run} is not a run directory (no {RESULTS_FILE})")
    if not 0.0 <= args.min_confidence <= 1.0:
        raise ConfigError(f"--min-confidence must be in [0, 1], got {args.min_confidence}")
    out = _writes_to(args, Path(args.out) if args.out else derived_run_dir(run, "detect"))
    transitions = detect_run(
        run, instance=args.instance, min_confidence=args.min_confidence, out_dir=out
    )
    print(format_transitions(transitions))
    print(f"wrote {out / 'transitions.json'}, {out / 'transitions.png'}")
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    """Run a sweep (CONFIG.toml --out DIR), or `status DIR` / `collect DIR` of one.

    Running is resumable: re-run the same command to finish a killed sweep;
    finished points are skipped. Executors: in this process (default),
    --processes N, --dask-local N (a LocalCluster of N workers) or
    --scheduler tcp://HOST:PORT (an existing Dask cluster).
    """
    from tms_slt.config import parse_override, with_overrides
    from tms_slt.sweep import collect, dask_client, load_sweep, run_sweep, sweep_status

    if args.target == "plot":
        return _sweep_plot(args)
    if args.target in ("status", "collect"):
        if args.dir is None:
            raise ConfigError(f"usage: tms-slt sweep {args.target} DIR")
        if args.target == "status":
            st = sweep_status(args.dir)
            total = len(st.done) + len(st.running) + len(st.pending) + len(st.failed)
            print(
                f"{args.dir}: {len(st.done)}/{total} done, {len(st.running)} running, "
                f"{len(st.pending)} pending, {len(st.failed)} failed"
            )
            for pid, error in st.failed.items():
                print(f"  failed {pid}: {error}")
            return 0 if st.complete else 3
        from tms_slt.io import write_dataset

        out = _writes_to(args, Path(args.out) if args.out else Path(args.dir) / "results.nc")
        if out.exists():
            raise ConfigError(
                f"{out} exists (collected before); tms-slt never overwrites it: pass --out FILE.nc"
            )
        write_dataset(out, collect(args.dir))
        print(f"wrote {out}")
        return 0

    path = args.config or args.target
    if path is None or args.dir is not None:
        raise ConfigError("usage: tms-slt sweep CONFIG.toml --out DIR | status DIR | collect DIR")
    sweep = load_sweep(path)
    updates = dict(parse_override(text) for text in args.set or [])
    updates |= {k: v for k, v in (("seed", args.seed), ("device", args.device)) if v is not None}
    if updates:
        sweep = dataclasses.replace(sweep, base=with_overrides(sweep.base, updates))
    _check_device_available(sweep.base.device)
    out = _out_dir(args, "sweep")
    progress = not args.quiet
    grid = dict(zip(sweep.axes, sweep.shape, strict=True))
    print(f"sweep: {len(sweep.points())} points {grid} -> {out}")
    if args.scheduler or args.dask_local:
        with dask_client(args.scheduler, local_workers=args.dask_local) as client:
            summary = run_sweep(sweep, out, executor=client, progress=progress)
    elif args.processes:
        summary = run_sweep(
            sweep, out, executor="process", max_workers=args.processes, progress=progress
        )
    else:
        summary = run_sweep(sweep, out, progress=progress)
    print(
        f"{summary.computed} computed, {summary.skipped} already done, "
        f"{len(summary.failed)} failed in {summary.elapsed_s:.1f} s"
    )
    for pid, error in summary.failed.items():
        print(f"  failed {pid}: {error}", file=sys.stderr)
    if summary.ok:
        print(f"collect with: tms-slt sweep collect {out}")
    return 0 if summary.ok else 1


def _sweep_plot(args: argparse.Namespace) -> int:
    """`tms-slt sweep plot DIR`: the collected observables against the sweep axes."""
    from tms_slt.io import RESULTS_FILE, read_dataset, save_figure
    from tms_slt.plots import plot_sweep, unreliable_cells
    from tms_slt.sweep import collect

    if args.dir is None:
        raise ConfigError("usage: tms-slt sweep plot DIR [--out FILE.png]")
    stored = Path(args.dir) / RESULTS_FILE
    collected = read_dataset(stored) if stored.exists() else collect(args.dir)
    out = _writes_to(args, Path(args.out) if args.out else Path(args.dir) / "sweep.png")
    if out.exists():
        raise ConfigError(f"{out} exists; tms-slt never overwrites it: pass --out FILE.png")
    save_figure(plot_sweep(collected), out)
    bad = unreliable_cells(collected)
    marked = f" ({int(bad.sum())} of {bad.size} λ̂ unreliable, marked x)" if bad is not None else ""
    print(f"wrote {out}{marked}")
    return 0


def cmd_figures(args: argparse.Namespace) -> int:
    """Rebuild paper/figures and paper/tables from saved results (paper/data), no training.

    With --quick, first run every study's experiment scripts in quick mode (minutes) into a
    new directory, then build the figures there: the pipeline end to end, paper/ untouched.
    """
    from tms_slt.io import default_run_dir
    from tms_slt.paper import STUDIES, build

    studies = args.studies or list(STUDIES)
    unknown = [s for s in studies if s not in STUDIES]
    if unknown:
        raise ConfigError(f"unknown study {unknown[0]!r}; known: {', '.join(STUDIES)}")
    if args.quick:
        out = _writes_to(args, Path(args.out) if args.out else default_run_dir("figures-quick"))
        _refuse_existing(out)
        data = out / "data"
        for study in studies:
            for name in STUDIES[study]:
                _experiment(Path(args.experiments), study, name).run(data / name, quick=True)
    else:
        out = Path(args.out) if args.out else Path("paper")
        data = Path(args.data) if args.data else Path("paper") / "data"
    for study in studies:
        built = build(study, data if args.quick else data / study, out)
        for name, result in built.items():
            print(f"{study}/{name}: " + ", ".join(str(f) for f in result.files))
            print("  " + json.dumps(result.numbers, default=float))
    return 0


def _experiment(root: Path, study: str, name: str):
    """experiments/<study>/<name>.py as a module (its `run(out, quick=...)`)."""
    import importlib.util

    path = root / study / f"{name}.py"
    if not path.exists():
        raise ConfigError(f"{path} not found: run from the repository root or pass --experiments")
    module_name = f"tms_slt_experiment_{study}_{name}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(spec)
    # Registered before it runs, as an import would be: dataclasses (and pickling) look
    # their defining module up in sys.modules.
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    return module


class _Parser(argparse.ArgumentParser):
    """argparse with its usage errors on one line (exit code 2), like every other error."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(2, f"{self.prog}: {message} (see {self.prog} --help)\n")


def _seed(text: str) -> int:
    """argparse type: a seed, an integer in [0, 2**63) as `experiment.seed` (calibrate
    --benchmark seeds a generator with it directly)."""
    from tms_slt.config import MAX_SEED

    message = f"expected an integer seed in [0, 2**63), got {text!r}"
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(message) from None
    if not 0 <= value < MAX_SEED:
        raise argparse.ArgumentTypeError(message)
    return value


def _positive_int(text: str) -> int:
    """argparse type: an integer ≥ 1 (a pool of 0 or −1 workers would compute nothing)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer ≥ 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer ≥ 1, got {value}")
    return value


def _chain_count(text: str) -> int:
    """argparse type: a number of SGLD chains, ≥ 2 (R-hat compares chains; one has none)."""
    value = _positive_int(text)
    if value < 2:
        raise argparse.ArgumentTypeError("expected at least 2 chains (R-hat compares chains)")
    return value


def _add_sweep_parser(sub) -> None:
    """`tms-slt sweep CONFIG.toml --out DIR [--scheduler ADDR | --dask-local N | --processes N]`,
    `tms-slt sweep status DIR`, `tms-slt sweep collect DIR [--out FILE.nc]`."""
    p = sub.add_parser(
        "sweep",
        help="run a grid of configs (resumable; local, process pool or Dask), status, collect",
        description=cmd_sweep.__doc__,
    )
    p.add_argument(
        "target",
        nargs="?",
        metavar="CONFIG.toml|status|collect|plot",
        help="sweep file to run, or `status` / `collect` / `plot` followed by DIR",
    )
    p.add_argument("dir", nargs="?", metavar="DIR", help="sweep directory (status, collect)")
    _common(p)
    where = p.add_mutually_exclusive_group()
    where.add_argument("--scheduler", metavar="ADDR", help="Dask scheduler, e.g. tcp://host:8786")
    where.add_argument(
        "--dask-local", type=_positive_int, metavar="N", help="start a Dask LocalCluster of N ≥ 1"
    )
    where.add_argument(
        "--processes", type=_positive_int, metavar="N", help="local process pool of N ≥ 1"
    )
    p.set_defaults(handler=cmd_sweep)


def _add_calibrate_arguments(p: argparse.ArgumentParser) -> None:
    """`tms-slt calibrate RUN_DIR [--checkpoint K] [grid]` or
    `tms-slt calibrate --benchmark [grid] [--draws N] [--chains N]`."""
    p.add_argument(
        "run_dir",
        nargs="?",
        metavar="RUN_DIR",
        help="directory written by `tms-slt train` (required unless --benchmark)",
    )
    p.add_argument(
        "--benchmark",
        action="store_true",
        help="run the grid on models with known λ (quadratic, normal crossings) and report "
        "λ̂'s relative error instead of calibrating a run",
    )
    p.add_argument("--checkpoint", type=int, help="checkpoint index (default: last)")
    p.add_argument(
        "--step-sizes",
        type=float,
        nargs="+",
        help="grid of ε (default: the automatic ε × 1/4 … 4; 1e-5 … 3e-3 with --benchmark)",
    )
    p.add_argument(
        "--nbetas",
        type=float,
        nargs="+",
        help="grid of nβ (default: config; 1000 with --benchmark)",
    )
    p.add_argument(
        "--localizations",
        type=float,
        nargs="+",
        help="grid of γ (default: the automatic γ × 1/4, 1, 4; 1 with --benchmark)",
    )
    p.add_argument(
        "--draws",
        type=_positive_int,
        help="--benchmark: draws per chain, a quarter of them burn-in (default 2000)",
    )
    p.add_argument(
        "--chains",
        type=_chain_count,
        help="--benchmark: chains per setting and model, at least 2 (default 4)",
    )


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", metavar="FILE.toml", help="experiment config (TOML)")
    parser.add_argument(
        "--out", metavar="DIR", help="run directory (default runs/<command>-<time>)"
    )
    parser.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help="override one config field, e.g. --set train.lr=0.01 (repeatable)",
    )
    parser.add_argument("--seed", type=_seed, help="override the config's seed")
    parser.add_argument("--device", help="torch device, e.g. cpu or cuda (default: config, cpu)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="tms-slt",
        description="Singular learning theory for toy models of superposition.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    commands: dict[str, tuple[Callable[[argparse.Namespace], int], str]] = {
        "quickstart": (cmd_quickstart, "train Chen et al.'s TMS and estimate the LLC end to end"),
        "train": (cmd_train, "train TMS instances and record their geometry"),
        "llc": (cmd_llc, "estimate the LLC at every checkpoint of a run directory"),
        "detect": (cmd_detect, "find phase transitions in a run directory (results.nc)"),
        "figures": (cmd_figures, "rebuild paper/ figures and tables from saved results"),
        "calibrate": (cmd_calibrate, "choose the SGLD step size at one checkpoint (ε, nβ, γ grid)"),
    }
    for name, (handler, help_text) in commands.items():
        p = sub.add_parser(name, help=help_text, description=handler.__doc__)
        _common(p)
        p.set_defaults(handler=handler)
        if name == "quickstart":
            p.add_argument("--instance", type=int, help="instance to plot (default: most eventful)")
        if name == "detect":
            p.add_argument("run_dir", metavar="RUN_DIR", help="directory with results.nc")
            p.add_argument("--instance", type=int, help="instance drawn in the figure")
            p.add_argument("--min-confidence", type=float, default=0.0, help="drop weaker records")
        if name == "llc":
            p.add_argument(
                "run_dir", metavar="RUN_DIR", help="directory written by `tms-slt train`"
            )
        if name == "calibrate":
            _add_calibrate_arguments(p)
        if name == "figures":
            p.add_argument("studies", nargs="*", metavar="STUDY", help="default: every study")
            p.add_argument(
                "--quick",
                action="store_true",
                help="run the studies' experiments in quick mode into --out first (minutes)",
            )
            p.add_argument("--data", metavar="DIR", help="saved results (default paper/data)")
            p.add_argument(
                "--experiments", default="experiments", metavar="DIR", help="for --quick"
            )
    _add_sweep_parser(sub)
    return parser


#: The exit status of a command stopped by Ctrl-C (SIGINT), as a shell reports it.
INTERRUPTED = 130


def _interrupted(args: argparse.Namespace) -> str:
    """What an interrupted command left: run directories and files appear whole or not at
    all (`io.save_run`), and a sweep keeps its finished points."""
    from tms_slt.io import RESULTS_FILE

    out = getattr(args, "writes_to", None)
    if out is None:
        return "interrupted; nothing written"
    if args.command == "sweep" and args.target not in ("collect", "plot"):
        return f"interrupted; finished points in {out} are kept: run the same command to resume"
    if out.is_file() or (out / RESULTS_FILE).is_file():
        return f"interrupted after {out} was written in full"
    if out.exists() and args.command in ("detect", "figures"):  # several files, one by one
        return f"interrupted; {out} holds only what finished"
    return f"interrupted; nothing written to {out}"


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except KeyboardInterrupt:
        print(f"tms-slt {args.command}: {_interrupted(args)}", file=sys.stderr)
        return INTERRUPTED
    except ConfigError as err:
        print(f"tms-slt: config error: {err}", file=sys.stderr)
        return 2
    except (ValueError, RuntimeError, OSError) as err:
        print(f"tms-slt {args.command}: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
