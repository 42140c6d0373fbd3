"""The objects that travel on our own sockets: a loaded stage model and a loaded text encoder."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..cascade.roles import require_role
from ..cascade.stage import Stage
from . import adapter

MODEL_TYPE = "IMAGEN_VIDEO_MODEL"
TEXT_ENCODER_TYPE = "IMAGEN_VIDEO_TEXT_ENCODER"


OFFLOAD_MODES = ["auto", "after_use", "low_vram"]


@dataclass
class ImagenVideoModel:
    """A stage on its offload device; :meth:`ready` moves it to the compute device on demand
    (through ComfyUI's model management, which may offload it again when others need memory).

    ``offload``: ``auto`` leaves it loaded until ComfyUI needs the memory; ``after_use`` moves it
    back as soon as a node is done with it; ``low_vram`` keeps the weights in CPU RAM and streams
    them to the device one layer at a time (for stages larger than the GPU)."""

    stage: Stage
    name: str
    device: torch.device
    patcher: object = None
    offload: str = "auto"

    @property
    def streams(self) -> bool:
        return self.offload == "low_vram" and self.device.type != "cpu"

    def ready(self, memory_required: int = 0) -> Stage:
        """The stage, ready to compute on its device; ``memory_required``: the run's estimated
        activation memory, for which ComfyUI unloads other models first."""
        return ready_together([self], memory_required)[0]

    def release(self) -> None:
        """After a node's run: back to the offload device if ``offload`` is ``after_use``."""
        if self.offload == "after_use":
            adapter.unload(self.patcher, self.stage.net)

    def require(self, role: str, node: str) -> None:
        require_role(self.stage, role, node)

    def describe(self) -> str:
        return f"{self.name}: {self.stage.config.describe()}"


def ready_together(models: list[ImagenVideoModel | None], memory_required: int = 0) -> list[Stage | None]:
    """Several stages that run interleaved (story streaming) loaded in one request, so that
    loading one never evicts another."""
    real = [m for m in models if m is not None]
    whole = [m for m in real if not m.streams]
    for m in real:
        if m.streams:
            adapter.free_memory(m.device, memory_required)
            if m.stage.offload is None:
                m.stage.low_vram(m.device, adapter.offload_device())
    adapter.load_to_device_together([(m.patcher, m.stage.net, m.device) for m in whole], memory_required)
    return [None if m is None else m.stage for m in models]


@dataclass
class ImagenVideoTextEncoder:
    """A text encoder kept on the offload device and loaded through ComfyUI's model management
    only while it encodes (so a stage that needs the memory can push it out)."""

    encoder: object  # cascade.text.TextEncoder
    name: str
    device: torch.device | None = None
    patcher: object = None

    def encode(self, prompts: str | list[str]):
        if self.device is not None:
            adapter.load_to_device(self.patcher, self.encoder.model, self.device)
        return self.encoder.encode([prompts] if isinstance(prompts, str) else list(prompts))
