"""palrm: personalized (pluralistic) reward models with PAL (Chen et al., ICLR 2025)."""

from palrm.config import AdaptConfig, EncoderConfig, ModelConfig, PALConfig, TrainConfig
from palrm.data.schema import PairData
from palrm.errors import (
    ConfigError,
    DataFormatError,
    ModelFileError,
    PalrmError,
    UnknownUserError,
)
from palrm.export import ScalarRewardModel
from palrm.reward_model import PALRewardModel
from palrm.version import __version__

__all__ = [
    "AdaptConfig",
    "ConfigError",
    "DataFormatError",
    "EncoderConfig",
    "ModelConfig",
    "ModelFileError",
    "PALConfig",
    "PALRewardModel",
    "PairData",
    "ScalarRewardModel",
    "PalrmError",
    "TrainConfig",
    "UnknownUserError",
    "__version__",
]
