"""palrm: personalized (pluralistic) reward models with PAL (Chen et al., ICLR 2025)."""

__version__ = "0.1.0"

from palrm.config import AdaptConfig, EncoderConfig, ModelConfig, PALConfig, TrainConfig  # noqa: E402
from palrm.data.schema import PairData  # noqa: E402
from palrm.errors import (  # noqa: E402
    ConfigError,
    DataFormatError,
    ModelFileError,
    PalrmError,
    UnknownUserError,
)
from palrm.export import ScalarRewardModel  # noqa: E402
from palrm.reward_model import PALRewardModel  # noqa: E402

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
