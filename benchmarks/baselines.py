"""Offline constructors for two third-party 3-D (video) U-Nets, for a CPU benchmark.

    make_imagen_unet3d(...)    -> (imagen_pytorch Unet3D,            forward_fn)
    make_diffusers_unet3d(...) -> (diffusers UNet3DConditionModel,  forward_fn)

Both forward_fn have the same call signature:

    forward_fn(x, text_embeds=None, lowres_cond=None, **extra) -> (B, 3, T, H, W)

      x           : (B, C, T, H, W) float, the noisy video (C = 3)
      text_embeds : (B, L, D) float or None (D = text_embed_dim / cross_attention_dim)
      lowres_cond : (B, 3, T, h, w) float or None; required iff the model was built with
                    lowres_cond=True. If (h, w) != (H, W) it is upsampled to (T, H, W) with
                    nearest interpolation (what imagen-pytorch's own cascade does) before use.
      extra       : forwarded to the model's forward (e.g. time=..., text_mask=..., ignore_time=...
                    for imagen; timestep=..., attention_mask=... for diffusers).

Nothing here touches the network: HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE are set, and the
T5 config that imagen_pytorch looks up at *import* time is pre-filled in memory.

imagen_pytorch/__init__.py imports torchvision (whose PyPI wheel does not load beside the
CPU-only torch 2.13: "operator torchvision::nms does not exist"), so torchvision is NOT installed
in this venv and `imagen_pytorch.imagen_video` is loaded under a stand-in parent package whose
__init__ is never executed.  See NOTES.md.

Used by benchmarks/unet_speed.py (run it in the benchmark environment: benchmarks/setup_env.sh).
"""

from __future__ import annotations

import importlib
import importlib.machinery
import importlib.util
import os
import sys
import types
from collections.abc import Callable, Sequence

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

import torch
import torch.nn.functional as F
from torch import nn

ForwardFn = Callable[..., torch.Tensor]
Bools = bool | Sequence[bool]

# d_model of google/t5-v1_1-base, imagen_pytorch's DEFAULT_T5_NAME (only used for the default
# value of Unet3D's text_embed_dim, which we always pass explicitly).
_T5_V1_1_BASE_D_MODEL = 768


# --------------------------------------------------------------------------------------------
# imagen-pytorch
# --------------------------------------------------------------------------------------------


def _load_imagen_video():
    """Import imagen_pytorch.imagen_video without running imagen_pytorch/__init__.py.

    If the real package is already imported (e.g. torchvision works in some other env), reuse it.
    Otherwise register a bare module object named `imagen_pytorch` whose __path__ points at the
    installed package directory, so that `imagen_pytorch.t5` / `imagen_pytorch.imagen_video`
    (which only import each other, torch, einops, tqdm and transformers) resolve normally.
    """
    name = "imagen_pytorch.imagen_video"
    if name in sys.modules:
        return sys.modules[name]

    if "imagen_pytorch" not in sys.modules:
        spec = importlib.util.find_spec("imagen_pytorch")  # does not execute __init__.py
        if spec is None or not spec.submodule_search_locations:
            raise ImportError("imagen-pytorch is not installed in this interpreter")
        pkg = types.ModuleType("imagen_pytorch")
        pkg.__path__ = list(spec.submodule_search_locations)
        pkg.__spec__ = importlib.machinery.ModuleSpec("imagen_pytorch", None, is_package=True)
        pkg.__spec__.submodule_search_locations = pkg.__path__
        pkg.__file__ = None
        sys.modules["imagen_pytorch"] = pkg

    # imagen_video.py evaluates `text_embed_dim = get_encoded_dim(DEFAULT_T5_NAME)` as a default
    # argument, i.e. at import time, which would call T5Config.from_pretrained (hub download).
    # Pre-fill the module-level cache that get_encoded_dim() consults first.
    t5 = importlib.import_module("imagen_pytorch.t5")
    if t5.DEFAULT_T5_NAME not in t5.T5_CONFIGS:
        from transformers import T5Config

        t5.T5_CONFIGS[t5.DEFAULT_T5_NAME] = dict(config=T5Config(d_model=_T5_V1_1_BASE_D_MODEL))
    return importlib.import_module(name)


def _upsample_lowres(lowres: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    target = tuple(like.shape[-3:])
    if tuple(lowres.shape[-3:]) == target:
        return lowres
    return F.interpolate(lowres, size=target, mode="nearest")


def make_imagen_unet3d(
    dim: int = 64,
    dim_mults: Sequence[int] = (1, 2, 4),
    text_embed_dim: int | None = 384,
    cond_images_channels: int = 0,
    layer_attns: Bools = (False, True, True),
    layer_cross_attns: Bools = (False, True, True),
    attend_at_middle: bool = True,
    num_resnet_blocks: int | Sequence[int] = 2,
    lowres_cond: bool = False,
    cond_on_text: bool = True,
    temporal_attn: bool = True,
    mid_cross_attn: bool = True,
    channels: int = 3,
    **kw,
) -> tuple[nn.Module, ForwardFn]:
    """Build imagen_pytorch.imagen_video.Unet3D (imagen-pytorch 2.1.0) offline.

    Library arguments (passed straight to Unet3D):
      dim, dim_mults, text_embed_dim, cond_images_channels, channels,
      layer_attns        per level: joint space-time self-attention TransformerBlock
                         (attends over all f*h*w tokens + the conditioning tokens),
      layer_cross_attns  per level: cross-attention (to time tokens + text tokens) inside the
                         first ResnetBlock of the level,
      attend_at_middle   self-attention over all f*h*w tokens at the bottleneck,
      num_resnet_blocks  per level: extra ResnetBlocks after the level's first one
                         (so each down / up level has 1 + num_resnet_blocks ResnetBlocks),
      lowres_cond        SR mode: concat low-res video on channels (input and final conv) and
                         condition on its noise level (forward needs lowres_cond_img,
                         lowres_noise_times),
      cond_on_text       build text projections (text_embeds is still optional in forward),
      **kw               any other Unet3D argument (attn_heads, attn_dim_head, cond_dim,
                         attn_pool_text, use_global_context_attn, temporal_strides,
                         time_causal_attn, memory_efficient, init_cross_embed, ...).

    Post-construction switches (NOT library arguments; module surgery done here):
      temporal_attn=False   replace every temporal self-attention (init, each down/up level,
                            middle) with nn.Identity. Unet3D has no constructor flag for this;
                            the temporal convolutions (temporal_peg and the 1-D temporal conv in
                            every pseudo-3-D conv) stay.
      mid_cross_attn=False  drop the cross-attention in mid_block1/mid_block2, which Unet3D
                            always builds (cond_dim is hard-wired there, independent of
                            layer_cross_attns).

    Returns (model, forward_fn) with
      forward_fn(x, text_embeds=None, lowres_cond=None, *, time=None, text_mask=None,
                 lowres_noise_times=None, **extra) -> (B, channels, T, H, W)
    `time` defaults to 0.5 for every sample (imagen uses continuous times in [0, 1]);
    `lowres_noise_times` defaults to 0 (no noise augmentation of the low-res video).
    """
    iv = _load_imagen_video()

    model = iv.Unet3D(
        dim=dim,
        dim_mults=tuple(dim_mults),
        text_embed_dim=text_embed_dim,
        cond_images_channels=cond_images_channels,
        layer_attns=tuple(layer_attns) if not isinstance(layer_attns, bool) else layer_attns,
        layer_cross_attns=(tuple(layer_cross_attns) if not isinstance(layer_cross_attns, bool) else layer_cross_attns),
        attend_at_middle=attend_at_middle,
        num_resnet_blocks=(tuple(num_resnet_blocks) if not isinstance(num_resnet_blocks, int) else num_resnet_blocks),
        lowres_cond=lowres_cond,
        cond_on_text=cond_on_text,
        channels=channels,
        **kw,
    )

    if not temporal_attn:
        model.init_temporal_attn = nn.Identity()
        model.mid_temporal_attn = nn.Identity()
        for level in list(model.downs) + list(model.ups):
            # downs: [pre_down, init_block, resnets, attn_block, temporal_peg, temporal_attn, t_down, post_down]
            # ups:   [init_block, resnets, attn_block, temporal_peg, temporal_attn, t_up, upsample]
            idx = 5 if len(level) == 8 else 4
            level[idx] = nn.Identity()
    if not mid_cross_attn:
        model.mid_block1.cross_attn = None
        model.mid_block2.cross_attn = None

    is_sr = lowres_cond

    def forward_fn(
        x: torch.Tensor,
        text_embeds: torch.Tensor | None = None,
        lowres_cond: torch.Tensor | None = None,
        *,
        time: torch.Tensor | None = None,
        text_mask: torch.Tensor | None = None,
        lowres_noise_times: torch.Tensor | None = None,
        **extra,
    ) -> torch.Tensor:
        b = x.shape[0]
        if time is None:
            time = torch.full((b,), 0.5, device=x.device, dtype=x.dtype)
        kwargs = dict(extra)
        if text_embeds is not None:
            kwargs["text_embeds"] = text_embeds
            if text_mask is not None:
                kwargs["text_mask"] = text_mask
        if is_sr:
            if lowres_cond is None:
                raise ValueError("this Unet3D was built with lowres_cond=True: pass lowres_cond")
            kwargs["lowres_cond_img"] = _upsample_lowres(lowres_cond, x)
            if lowres_noise_times is None:
                lowres_noise_times = torch.zeros((b,), device=x.device, dtype=x.dtype)
            kwargs["lowres_noise_times"] = lowres_noise_times
        elif lowres_cond is not None:
            raise ValueError("lowres_cond given but the model was built with lowres_cond=False")
        return model(x, time, **kwargs)

    return model, forward_fn


# --------------------------------------------------------------------------------------------
# diffusers
# --------------------------------------------------------------------------------------------


def make_diffusers_unet3d(
    block_out_channels: Sequence[int] = (64, 128, 256),
    layers_per_block: int = 2,
    cross_attention_dim: int = 384,
    in_channels: int = 3,
    attention_head_dim: int | Sequence[int] = 64,
    down_block_types: Sequence[str] | None = None,
    up_block_types: Sequence[str] | None = None,
    attn_levels: Bools | None = None,
    out_channels: int = 3,
    lowres_cond: bool | None = None,
    norm_num_groups: int = 32,
    **kw,
) -> tuple[nn.Module, ForwardFn]:
    """Build diffusers.UNet3DConditionModel (diffusers 0.42.1) offline (pure config, no weights).

    Block types: pass down_block_types / up_block_types explicitly, or attn_levels (one bool per
    level, shallow -> deep): True -> CrossAttnDownBlock3D / CrossAttnUpBlock3D (per-frame
    spatial self-attn + cross-attn + FF, then temporal self-attention, after each resnet),
    False -> DownBlock3D / UpBlock3D (resnets + temporal convs only).  Default when neither is
    given: attention on every level except the first (shallowest).
    up_block_types are the mirror image (deepest level first).

    SR: the (upsampled) low-res video is concatenated to x on channels, so conv_in takes
    in_channels = 6.  Either pass in_channels=6 (lowres_cond=None infers SR from
    in_channels == 2 * out_channels) or in_channels=3 with lowres_cond=True (then 3 is added).

    Unavoidable in UNet3DConditionModel (no constructor switch):
      * transformer_in: a temporal transformer (8 heads x attention_head_dim) after conv_in;
      * mid_block is always UNetMidBlock3DCrossAttn (spatial self+cross attention and temporal
        attention at the bottleneck);
      * forward requires encoder_hidden_states: when text_embeds is None the forward_fn passes a
        single all-zero token (B, 1, cross_attention_dim).
    attention_head_dim is the per-head width inside the blocks (heads = channels // it);
    block_out_channels must be divisible by norm_num_groups (GroupNorm).

    Returns (model, forward_fn) with
      forward_fn(x, text_embeds=None, lowres_cond=None, *, timestep=None, attention_mask=None,
                 **extra) -> (B, out_channels, T, H, W)
    `timestep` defaults to 500 (discrete DDPM step).
    """
    from diffusers import UNet3DConditionModel

    n = len(block_out_channels)
    if down_block_types is None:
        if attn_levels is None:
            attn_levels = tuple(i > 0 for i in range(n))
        elif isinstance(attn_levels, bool):
            attn_levels = (attn_levels,) * n
        attn_levels = tuple(attn_levels)
        assert len(attn_levels) == n, "attn_levels needs one entry per level"
        down_block_types = tuple("CrossAttnDownBlock3D" if a else "DownBlock3D" for a in attn_levels)
    if up_block_types is None:
        up_block_types = tuple(
            "CrossAttnUpBlock3D" if t.startswith("CrossAttn") else "UpBlock3D" for t in reversed(tuple(down_block_types))
        )

    model_in = in_channels
    if lowres_cond is None:
        lowres_cond = in_channels == 2 * out_channels
    elif lowres_cond and in_channels == out_channels:
        model_in = in_channels + out_channels  # x (3) + low-res video (3) = 6

    model = UNet3DConditionModel(
        sample_size=None,
        in_channels=model_in,
        out_channels=out_channels,
        down_block_types=tuple(down_block_types),
        up_block_types=tuple(up_block_types),
        block_out_channels=tuple(block_out_channels),
        layers_per_block=layers_per_block,
        cross_attention_dim=cross_attention_dim,
        attention_head_dim=(tuple(attention_head_dim) if not isinstance(attention_head_dim, int) else attention_head_dim),
        norm_num_groups=norm_num_groups,
        **kw,
    )

    is_sr = lowres_cond

    def forward_fn(
        x: torch.Tensor,
        text_embeds: torch.Tensor | None = None,
        lowres_cond: torch.Tensor | None = None,
        *,
        timestep: torch.Tensor | int | None = None,
        attention_mask: torch.Tensor | None = None,
        **extra,
    ) -> torch.Tensor:
        b = x.shape[0]
        if is_sr:
            if lowres_cond is None:
                raise ValueError("this model was built with lowres_cond=True: pass lowres_cond")
            x = torch.cat((x, _upsample_lowres(lowres_cond, x)), dim=1)
        elif lowres_cond is not None:
            raise ValueError("lowres_cond given but the model was built with lowres_cond=False")
        if text_embeds is None:
            text_embeds = torch.zeros((b, 1, cross_attention_dim), device=x.device, dtype=x.dtype)
            attention_mask = None
        if timestep is None:
            timestep = torch.full((b,), 500, device=x.device, dtype=torch.long)
        return model(
            x,
            timestep,
            encoder_hidden_states=text_embeds,
            attention_mask=attention_mask,
            return_dict=False,
            **extra,
        )[0]

    return model, forward_fn


def count_params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())
