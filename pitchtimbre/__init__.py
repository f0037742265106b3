"""pitchtimbre: pitch-timbre disentanglement with VAE-based metric learning.

A teaching and reproduction package for Tanaka et al., ICASSP 2021. Each public function
names the book chapter that introduces it.

Chapter: 01_introduction
"""

from .config import ExperimentConfig, profile_config, resolve_profile
from .errors import PitchTimbreError

__version__ = "0.1.0"

__all__ = [
    "ExperimentConfig",
    "PitchTimbreError",
    "__version__",
    "profile_config",
    "resolve_profile",
]
