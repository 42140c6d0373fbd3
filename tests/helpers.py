"""Tiny stage configurations shared by the tests."""

import torch

from cascade.config import DistillationInfo, StageConfig, UNetConfig
from cascade.stage import Stage


def tiny_unet(**kw) -> UNetConfig:
    base = dict(
        channels=(8, 16),
        num_res_blocks=1,
        spatial_attn=(False, True),
        cross_attn=(False, True),
        temporal_attn=(False, True),
        text_dim=8,
        head_dim=8,
        norm_groups=4,
    )
    base.update(kw)
    return UNetConfig(**base)


def tiny_stage(role="base", distilled=False, continuation=False, seed=0, **kw) -> Stage:
    cond = {"base": 4 if continuation else 0, "ssr": 3, "tsr": 4}[role]
    unet = tiny_unet(cond_channels=cond, aug_cond=role != "base" or continuation, guidance_cond=distilled)
    extra = {"ssr": {"spatial_factor": 2.0}, "tsr": {"temporal_factor": 2}}.get(role, {})
    cfg = StageConfig(
        role=role,
        unet=unet,
        frames=4,
        height=8,
        width=8,
        text_dim=8,
        text_encoder="test-encoder",
        continuation=continuation,
        distillation=DistillationInfo(steps=(4, 2), w_max=5.0) if distilled else None,
        name=f"tiny-{role}",
        **extra,
        **kw,
    )
    stage = Stage(cfg)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in stage.net.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.05)
    stage.net.eval()
    return stage
