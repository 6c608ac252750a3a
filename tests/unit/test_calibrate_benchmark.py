"""`tms-slt calibrate --benchmark` and `calibrate_known`: the ε grid on known-λ potentials."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from tms_slt.cli import main
from tms_slt.io import read_dataset
from tms_slt.sampling.benchmark import calibrate_known, known_llc_models

# A row of the benchmark table: model, ε, nβ, γ, λ̂, λ, relative error, MCSE, R-hat,
# divergent fraction, MALA acceptance (a "-" where a diverged setting has no value).
_NUM = r"(-|[-+]?\d+(?:\.\d+)?(?:e[-+]?\d+)?)"
_ROW = re.compile(
    rf"^(\S+)\s+(\d+e-\d+)\s+{_NUM}\s+{_NUM}\s+{_NUM}\s+{_NUM}\s+(-|[-+]\d+\.\d%)"
    rf"\s+{_NUM}\s+{_NUM}\s+{_NUM}\s+{_NUM}(\s+<- recommended)?$"
)


def test_cli_benchmark_prints_a_row_per_model_and_step(tmp_path, capsys):
    out = tmp_path / "bench"
    argv = ["calibrate", "--benchmark", "--quiet", "--seed", "0", "--out", str(out)]
    argv += ["--step-sizes", "3e-4", "1e-3", "--draws", "200", "--chains", "2"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    rows = [m.groups() for line in printed.splitlines() if (m := _ROW.match(line))]
    models = list(known_llc_models())
    assert [(r[0], float(r[1])) for r in rows] == [(m, e) for m in models for e in (3e-4, 1e-3)]
    report = read_dataset(out / "results.nc")
    assert report.sizes["model"] == len(models) and report.sizes["step_size"] == 2
    for model, eps, nbeta, gamma, llc_hat, llc, rel_err, *_ in rows:
        r = report.sel(model=model, step_size=float(eps), nbeta=1000.0, localization=1.0)
        assert (float(nbeta), float(gamma), float(llc)) == (1000.0, 1.0, float(r["true_llc"]))
        if llc_hat == "-":  # a diverged setting prints no λ̂ and no error
            assert rel_err == "-" and r["divergent_fraction"] > 0
            continue
        expected = (float(r["llc_mean"]) - float(r["true_llc"])) / float(r["true_llc"])
        assert float(rel_err.rstrip("%")) == pytest.approx(100 * expected, abs=0.051)
    # one verdict per model, about the ε the diagnostics recommend
    lines = [ln for ln in printed.splitlines() if ln.startswith("  nβ=1000, γ=1: ")]
    assert len(lines) == len(models)
    for model, line in zip(models, lines, strict=True):
        rec = report["recommended_step_size"].sel(model=model).item()
        if np.isnan(rec):
            assert "no ε in the grid" in line
        else:
            ok = bool(report["trustworthy"].sel(model=model).item())
            assert line.endswith(": yes" if ok else ": NO")
    assert "benchmark report, no config.toml" in printed


@pytest.mark.parametrize(
    "argv",
    [
        ["calibrate"],
        ["calibrate", "--quiet", "--step-sizes", "1e-4"],
        ["calibrate", "some_run", "--benchmark"],
        ["calibrate", "--benchmark", "--config", "x.toml"],
    ],
)
def test_calibrate_usage_errors_are_one_line_with_exit_code_2(argv, capsys):
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("tms-slt calibrate: ")


def test_quadratic_error_is_within_mcse_plus_euler_bias():
    nbeta, gamma = 1000.0, 1.0
    report = calibrate_known(
        step_sizes=[1e-4, 3e-4, 3e-3],
        nbetas=[nbeta],
        localizations=[gamma],
        num_chains=16,
        num_draws=2000,
        num_burnin=500,
        models=["quadratic_d8"],
        generator=torch.Generator().manual_seed(0),
    ).sel(model="quadratic_d8", nbeta=nbeta, localization=gamma)
    lam = float(report["true_llc"])
    assert lam == 4.0
    r = report.sel(step_size=1e-4)
    mcse = float(r["mcse"])
    assert mcse < 0.05 * lam  # otherwise the bound below would be vacuous
    # Bias allowance: for K = ‖w‖²/2 the SGLD chain w' = (1 − εc/2)w + √ε ξ, c = nβ + γ, is
    # an AR(1) with stationary variance 1/(c(1 − εc/4)) per coordinate instead of 1/nβ, so
    # E[λ̂] = λ · nβ/c / (1 − εc/4) (≈ +2.5% at ε = 1e-4). The rest is Monte Carlo error:
    # 4 MCSE leave a ~1e-4 chance of a false failure.
    c = nbeta + gamma
    bias = lam * abs(nbeta / c / (1 - 1e-4 * c / 4) - 1)
    assert abs(float(r["llc_mean"]) - lam) < 4 * mcse + bias
    # ε = 3e-3 is far past stable: εc/4 ≈ 0.75 quadruples λ̂; the diagnostics must not pick it.
    assert float(report["relative_error"].sel(step_size=3e-3)) > 1.0
    rec = float(report["recommended_step_size"])
    assert rec in (1e-4, 3e-4)
    err = float(report["relative_error"].sel(step_size=rec))
    assert float(report["recommended_relative_error"]) == pytest.approx(err)
    assert bool(report["trustworthy"]) == (abs(err) < 0.1)


def test_calibrate_known_rejects_unknown_models():
    with pytest.raises(ValueError, match="models must be"):
        calibrate_known(step_sizes=[1e-4], models=["no_such_model"])
