"""Imagen Video's cascade in pure PyTorch (no ComfyUI needed).

Main entry points::

    from cascade import load_stage, load_text_encoder, generate, upsample_temporal, upsample_spatial

and the command line ``python -m cascade --help``.
"""

from .config import DistillationInfo, StageConfig, UNetConfig
from .guidance import GuidanceOptions
from .pipeline import SamplingOptions, generate, upsample_spatial, upsample_temporal
from .samplers import Sampler
from .schedule import CosineSchedule
from .stage import Stage, load_stage
from .text import TextEmbedding, load_text_encoder
from .unet import VideoUNet

__version__ = "0.1.0"

__all__ = [
    "CosineSchedule",
    "DistillationInfo",
    "GuidanceOptions",
    "Sampler",
    "SamplingOptions",
    "Stage",
    "StageConfig",
    "TextEmbedding",
    "UNetConfig",
    "VideoUNet",
    "generate",
    "load_stage",
    "load_text_encoder",
    "upsample_spatial",
    "upsample_temporal",
]
