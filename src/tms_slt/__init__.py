"""tms-slt: singular learning theory for toy models of superposition.

Train TMS autoencoders x' = act(WᵀWx + b) (Elhage et al. 2022), estimate the
local learning coefficient at every checkpoint with batched SGLD (Lau et al.
2023), follow their geometry, and find phase transitions (Chen et al. 2023).
"""

from tms_slt import geometry, theory, transitions
from tms_slt.config import (
    ConfigError,
    DataConfig,
    ExperimentConfig,
    LLCConfig,
    ModelConfig,
    TrainConfig,
    load_config,
)
from tms_slt.data import SparsityRamp, TMSDistribution
from tms_slt.models import TMSParams, forward, get_activation, reconstruction_loss
from tms_slt.sampling.calibrate import calibrate
from tms_slt.sampling.llc import LLCResult, compute_llc, default_nbeta, estimate_llc
from tms_slt.sweep import collect, load_sweep, run_sweep, sweep_status
from tms_slt.training import TrainingDivergedError, Trajectory, train
from tms_slt.transitions import Transition, bayesian_crossings, detect_dynamical, detect_sweep

__version__ = "0.1.0"

__all__ = [
    "ConfigError",
    "DataConfig",
    "ExperimentConfig",
    "LLCConfig",
    "LLCResult",
    "ModelConfig",
    "SparsityRamp",
    "TMSDistribution",
    "TMSParams",
    "TrainConfig",
    "TrainingDivergedError",
    "Trajectory",
    "Transition",
    "__version__",
    "bayesian_crossings",
    "calibrate",
    "collect",
    "compute_llc",
    "default_nbeta",
    "detect_dynamical",
    "detect_sweep",
    "estimate_llc",
    "forward",
    "geometry",
    "get_activation",
    "load_config",
    "load_sweep",
    "reconstruction_loss",
    "run_sweep",
    "sweep_status",
    "theory",
    "train",
    "transitions",
]
