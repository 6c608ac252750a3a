"""Shared fixtures: small configs that keep the suite fast on a 2-core machine."""

from __future__ import annotations

import pytest
import torch

from tms_slt.config import DataConfig, ExperimentConfig, LLCConfig, ModelConfig, TrainConfig

# The models under test have tens of parameters: a second intra-op thread only adds
# synchronisation, and on a 2-core CI machine it competes with the test runner.
torch.set_num_threads(1)


@pytest.fixture
def tiny_config() -> ExperimentConfig:
    """Chen et al.'s setting, shrunk: 6 features, 2 dims, few steps and draws."""
    return ExperimentConfig(
        seed=3,
        data=DataConfig(n_features=6, active_features=1, n_train=200),
        model=ModelConfig(n_hidden=2),
        train=TrainConfig(num_steps=200, num_instances=2, num_checkpoints=8, batch_size=50),
        llc=LLCConfig(num_chains=2, num_draws=40, num_burnin=10, batch_size=50),
    )
