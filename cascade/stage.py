"""A cascade stage: its :class:`StageConfig` and its network (the role builds it: a
:class:`~cascade.unet.VideoUNet` for the diffusion roles), loadable and savable."""

from __future__ import annotations

import logging
import os

import torch

from .checkpoint import load_stage_file, save_stage_file
from .config import StageConfig
from .diffusion import VDenoiser
from .offload import SequentialOffload
from .roles import get_role
from .text import TextEmbedding

__all__ = ["Stage", "load_stage"]

log = logging.getLogger(__name__)


class Stage:
    def __init__(self, config: StageConfig, net: torch.nn.Module | None = None, source: str = ""):
        self.config = config
        self.net = net if net is not None else get_role(config.role).build_network(config)
        self.source = source
        self.offload: SequentialOffload | None = None

    @property
    def role(self) -> str:
        return self.config.role

    @property
    def device(self) -> torch.device:
        """Where the stage computes: its weights' device, or the execution device in low-VRAM mode."""
        if self.offload is not None and self.offload.attached:
            return self.offload.device
        return next(self.net.parameters()).device

    def low_vram(self, device: torch.device | str | None, offload_device: torch.device | str = "cpu") -> Stage:
        """Run on ``device`` with the weights on ``offload_device``, one module at a time
        (:class:`~cascade.offload.SequentialOffload`); ``None`` turns it off."""
        if self.offload is not None:
            self.offload.detach()
            self.offload = None
        if device is not None:
            self.offload = SequentialOffload(self.net, device, offload_device).attach()
        return self

    @property
    def dtype(self) -> torch.dtype:
        return next(self.net.parameters()).dtype

    def to(self, device=None, dtype=None) -> Stage:
        self.net.to(device=device, dtype=dtype)
        return self

    def denoiser(self) -> VDenoiser:
        return VDenoiser(self.net, self.config.schedule)

    def check_text(self, text: TextEmbedding | None) -> None:
        """Refuse text of a width the stage was not trained with; warn on a different encoder id."""
        cfg = self.config
        if text is None or not cfg.text_dim:
            return
        if text.width != cfg.text_dim:
            raise ValueError(
                f"The {cfg.role} stage {self.source or cfg.name!r} was trained with {cfg.text_encoder or 'a'} "
                f"text encoder of width {cfg.text_dim}, but the conditioning is {text.width} wide"
                f"{f' ({text.encoder_id})' if text.encoder_id else ''}. Encode the prompt with "
                f"{cfg.text_encoder or 'the encoder the stage was trained with'}."
            )
        if text.encoder_id and cfg.text_encoder and text.encoder_id != cfg.text_encoder:
            log.warning(
                "Stage %s was trained with text encoder %s but the prompt was encoded with %s (same width %d): "
                "results will likely be meaningless.",
                self.source or cfg.name,
                cfg.text_encoder,
                text.encoder_id,
                text.width,
            )

    def save(self, path: str | os.PathLike, dtype: torch.dtype | None = None) -> None:
        save_stage_file(path, self.net.state_dict(), self.config, dtype=dtype)

    @classmethod
    def load(cls, path, *, device="cpu", dtype: torch.dtype | None = None, role: str | None = None) -> Stage:
        return load_stage(path, device=device, dtype=dtype, role=role)


def load_stage(path, *, device="cpu", dtype: torch.dtype | None = None, role: str | None = None) -> Stage:
    """Load a stage file, validating role, keys and shapes. ``dtype=None`` keeps fp32 weights."""
    from .checkpoint import read_stage_config

    config = read_stage_config(path)
    with torch.device("meta"):
        net = get_role(config.role).build_network(config)
    expected = {k: v.shape for k, v in net.state_dict().items()}
    config, sd = load_stage_file(path, expected, role=role)
    net.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in sd.items()}, assign=True)
    net.eval().requires_grad_(False)
    stage = Stage(config, net, source=os.path.basename(str(path)))
    return stage.to(device=device, dtype=dtype)
