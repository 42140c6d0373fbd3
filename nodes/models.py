"""The objects that travel on our own sockets: a loaded stage model and a loaded text encoder."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..cascade.roles import require_role
from ..cascade.stage import Stage
from . import adapter

MODEL_TYPE = "IMAGEN_VIDEO_MODEL"
TEXT_ENCODER_TYPE = "IMAGEN_VIDEO_TEXT_ENCODER"


@dataclass
class ImagenVideoModel:
    """A stage on its offload device; :meth:`ready` moves it to the compute device on demand
    (through ComfyUI's model management, which may offload it again when others need memory)."""

    stage: Stage
    name: str
    device: torch.device
    patcher: object = None

    def ready(self) -> Stage:
        adapter.load_to_device(self.patcher, self.stage.net, self.device)
        return self.stage

    def require(self, role: str, node: str) -> None:
        require_role(self.stage, role, node)

    def describe(self) -> str:
        return f"{self.name}: {self.stage.config.describe()}"


@dataclass
class ImagenVideoTextEncoder:
    encoder: object  # cascade.text.TextEncoder
    name: str

    def encode(self, prompt: str):
        return self.encoder.encode([prompt])
