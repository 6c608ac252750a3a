from __future__ import annotations

import pytest

from tms_slt.config import (
    ConfigError,
    DataConfig,
    ExperimentConfig,
    LLCConfig,
    ModelConfig,
    TrainConfig,
    config_from_dict,
    config_to_toml,
    load_config,
    with_overrides,
)


def test_defaults_are_valid_and_chen_et_al():
    c = ExperimentConfig()
    assert (c.data.n_features, c.model.n_hidden, c.data.active_features) == (6, 2, 1)
    assert c.data.n_train == 30_000


@pytest.mark.parametrize(
    ("build", "field"),
    [
        (lambda: DataConfig(sparsity=1.5, active_features=None), "data.sparsity"),
        (lambda: DataConfig(sparsity=-0.1, active_features=None), "data.sparsity"),
        (lambda: DataConfig(sparsity=[0.1, 0.2], active_features=None), "data.sparsity"),
        (lambda: DataConfig(n_features=0), "data.n_features"),
        (lambda: DataConfig(active_features=7), "data.active_features"),
        (lambda: DataConfig(importance_decay=0.0), "data.importance_decay"),
        (lambda: ModelConfig(activation="tanh"), "model.activation"),
        (lambda: ModelConfig(n_hidden=-1), "model.n_hidden"),
        (lambda: TrainConfig(lr=0.0), "train.lr"),
        (lambda: TrainConfig(lr=float("nan")), "train.lr"),
        (lambda: TrainConfig(num_steps=0), "train.num_steps"),
        (lambda: TrainConfig(optimizer="lbfgs"), "train.optimizer"),
        (lambda: LLCConfig(step_size=-1e-3), "llc.step_size"),
        (lambda: LLCConfig(nbeta=0.0), "llc.nbeta"),
        (lambda: LLCConfig(num_burnin=600, num_draws=500), "llc.num_burnin"),
        (lambda: ExperimentConfig(model=ModelConfig(n_hidden=6)), "model.n_hidden"),
        (lambda: ExperimentConfig(llc=LLCConfig(batch_size=50_000)), "llc.batch_size"),
        (lambda: ExperimentConfig(device="gpu0"), "experiment.device"),
        (lambda: ExperimentConfig(seed=2**63), "experiment.seed"),
        (lambda: LLCConfig(num_chains=1), "llc.num_chains"),
    ],
)
def test_bad_values_name_the_field(build, field):
    with pytest.raises(ConfigError) as info:
        build()
    message = str(info.value)
    assert field in message
    assert "\n" not in message


def test_both_or_neither_data_mode_is_an_error():
    with pytest.raises(ConfigError, match="exactly one"):
        DataConfig(sparsity=0.5, active_features=1)


def test_unknown_keys_are_rejected():
    with pytest.raises(ConfigError, match=r"train\.lrr"):
        config_from_dict({"train": {"lrr": 0.1}})
    with pytest.raises(ConfigError, match="unknown key 'trian'"):
        config_from_dict({"trian": {}})


def test_sparsity_in_toml_selects_independent_features(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text("[data]\nsparsity = 0.9\nn_features = 5\n[model]\nn_hidden = 2\n")
    config = load_config(path)
    assert config.data.sparsity == 0.9
    assert config.data.active_features is None


def test_toml_round_trip(tmp_path):
    config = ExperimentConfig(
        seed=7,
        data=DataConfig(sparsity=[0.1, 0.2, 0.3, 0.4], active_features=None, n_features=4),
        model=ModelConfig(activation="swish", swish_sharpness=4.0),
        train=TrainConfig(lr=0.05, optimizer="adam"),
    )
    path = tmp_path / "c.toml"
    path.write_text(config_to_toml(config))
    assert load_config(path) == config


def test_invalid_toml_and_missing_file(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[data\n")
    with pytest.raises(ConfigError, match="invalid TOML"):
        load_config(bad)
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.toml")


def test_overrides_switch_data_mode_and_validate():
    config = with_overrides(ExperimentConfig(), {"data.sparsity": 0.8, "train.lr": 0.2})
    assert config.data.sparsity == 0.8 and config.data.active_features is None
    assert config.train.lr == 0.2
    back = with_overrides(config, {"data.active_features": 2})
    assert back.data.active_features == 2 and back.data.sparsity is None
    with pytest.raises(ConfigError, match="unknown"):
        with_overrides(config, {"train.nope": 1})
    with pytest.raises(ConfigError, match=r"train\.lr"):
        with_overrides(config, {"train.lr": -1.0})


SCHEDULE_TOML = """
[data]
n_features = 5
sparsity = 0.6
importance_decay = 0.9
n_train = 0

[model]
n_hidden = 2

[train]
num_steps = 40
num_instances = 2
num_checkpoints = 5
batch_size = 32

[[schedule]]
parameter = "sparsity"
start = 0.6
end = 0.97
begin = 10
finish = 30
shape = "cyclic"
"""


def test_schedule_tables_round_trip_and_drive_training(tmp_path):
    import torch

    from tms_slt.schedules import DistributionSchedule
    from tms_slt.training import train

    path = tmp_path / "moving.toml"
    path.write_text(SCHEDULE_TOML)
    config = load_config(path)
    (ramp,) = config.schedule
    assert (ramp.parameter, ramp.shape, ramp.begin, ramp.finish) == ("sparsity", "cyclic", 10, 30)
    again = tmp_path / "again.toml"
    again.write_text(config_to_toml(config))
    assert load_config(again) == config
    q = DistributionSchedule.from_config(config)
    assert float(q(20).sparsity) == pytest.approx(0.97) and float(q(0).sparsity) == pytest.approx(
        0.6
    )
    assert q(0).importance_decay == 0.9
    # train(config) follows the schedule: the same trajectory as passing it explicitly.
    a = train(config, generator=torch.Generator().manual_seed(0), progress=False)
    b = train(config, distribution=q, generator=torch.Generator().manual_seed(0), progress=False)
    assert torch.equal(a.W, b.W)
    fixed = ExperimentConfig(**{**config.__dict__, "schedule": ()})
    c = train(fixed, generator=torch.Generator().manual_seed(0), progress=False)
    assert not torch.equal(a.W, c.W)  # the ramp changed the data after step 10
    assert "[[schedule]]" not in config_to_toml(fixed)


@pytest.mark.parametrize(
    ("table", "match"),
    [
        ('parameter = "noise"', "schedule.parameter"),
        ('shape = "sine"', "schedule.shape"),
        ("end = 1.5", r"schedule.end must be in \[0, 1\]"),
        ("begin = 40", "schedule.begin must be at most finish"),
        ("finsh = 3", "did you mean 'schedule.finish'"),
    ],
)
def test_bad_schedule_tables_are_one_line_errors(tmp_path, table, match):
    key = table.split(" =")[0]
    lines = [ln for ln in SCHEDULE_TOML.splitlines() if not ln.startswith(f"{key} =")]
    path = tmp_path / "bad.toml"
    path.write_text("\n".join(lines) + f"\n{table}\n")
    with pytest.raises(ConfigError, match=match):
        load_config(path)


def test_schedule_needs_online_data_and_all_its_keys(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text(SCHEDULE_TOML.replace("n_train = 0", "n_train = 100"))
    with pytest.raises(ConfigError, match=r"data\.n_train must be 0"):
        load_config(path)
    path.write_text(SCHEDULE_TOML.replace("begin = 10\n", ""))
    with pytest.raises(ConfigError, match="missing \\['begin'\\]"):
        load_config(path)
