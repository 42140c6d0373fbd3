"""Checks of user input that run before any model does: one function per rule, called by the
library, the CLI and the nodes alike.

* :func:`check_count` - a whole number in its range (steps, frames, sizes), never replaced by a default;
* :func:`check_output_path` - a video file we can write: supported extension, not a folder, a
  writable folder with room for it; checked before sampling, so a bad ``-o`` costs nothing;
* :func:`estimate_sampling_bytes` / :func:`check_memory` - the memory a sampling call needs against
  what the device has, refused with the option to lower named;
* :func:`check_stage_text` - every stage of a cascade against the text encoder, before the first runs;
* :func:`check_device` / :func:`resolve_precision` - a device this machine has, and the weight precision a
  ``--precision`` / node choice means on it (``auto``: bf16, or fp16, on a GPU; fp32 on the CPU).
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

import torch

__all__ = [
    "PRECISIONS",
    "VIDEO_SUFFIXES_WRITABLE",
    "available_bytes",
    "check_count",
    "check_device",
    "check_memory",
    "check_output_path",
    "check_precision",
    "check_stage_text",
    "estimate_sampling_bytes",
    "resolve_precision",
]

VIDEO_SUFFIXES_WRITABLE = (".mp4", ".webm", ".mkv", ".gif")
GIB = 1024**3
log = logging.getLogger(__name__)
PRECISIONS = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def check_device(device: str | torch.device) -> torch.device:
    """``device`` as a :class:`torch.device` this machine has (a GPU index it has, a backend this
    PyTorch build was compiled with), or a clear error before anything loads."""
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError, TypeError):
        raise ValueError(f"Unknown device {device!r}; use cpu, cuda, cuda:1 or mps.") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"Device {device!r}: this PyTorch has no CUDA GPU to use; use cpu (or a CUDA build of PyTorch).")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(f"Device {device!r}: this machine has {torch.cuda.device_count()} CUDA GPU(s), cuda:0 ...")
    elif dev.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"Device {device!r}: MPS is not available here; use cpu.")
    elif dev.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"Unsupported device {device!r}; use cpu, cuda, cuda:1 or mps.")
    return dev


def check_precision(choice: str) -> str:
    """``choice`` if it names a precision (``auto`` or a key of :data:`PRECISIONS`), else a clear error."""
    if choice != "auto" and choice not in PRECISIONS:
        raise ValueError(f"Unknown precision {choice!r}; choose auto, {', '.join(PRECISIONS)}.")
    return choice


def resolve_precision(choice: str, device: str | torch.device) -> torch.dtype:
    """The weight dtype ``choice`` (``auto``, ``fp32``, ``fp16``, ``bf16``) means on ``device``: ``auto`` is
    bf16 (fp16 where the GPU lacks bf16) on a CUDA GPU and fp32 elsewhere, so a CPU run keeps the videos of
    before. On the CPU bf16 is faster where it has AVX-512-BF16 / AMX and slower elsewhere, and fp16 is slow
    everywhere (``benchmarks/generate_precision.py``)."""
    if check_precision(choice) == "auto":
        if torch.device(device).type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32
    if choice == "fp16" and torch.device(device).type == "cpu":  # what was asked is kept; the cost is said
        log.warning("fp16 on the CPU is slow (50x fp32's time for the fast path on a 2-core CPU); bf16 or fp32 are faster.")
    return PRECISIONS[choice]


def check_count(name: str, value, minimum: int = 1, maximum: int | None = None, hint: str = "") -> int:
    """``value`` as an int in ``[minimum, maximum]``; anything else (0 where 1 is the least, a
    fraction, a bool, text) is refused with a message naming ``name``."""
    ok = isinstance(value, int) and not isinstance(value, bool) or (isinstance(value, float) and value.is_integer())
    if not ok or value < minimum or (maximum is not None and value > maximum):
        span = f">= {minimum}" if maximum is None else f"between {minimum} and {maximum}"
        raise ValueError(f"{name} must be a whole number {span}; received {value!r}.{(' ' + hint) if hint else ''}")
    return int(value)


def check_output_path(path: str | os.PathLike, *, suffixes=VIDEO_SUFFIXES_WRITABLE, need_bytes: int = 1 << 20) -> Path:
    """A video file that can be written: a supported extension, not an existing folder, in a folder
    that exists (or can be made) and is writable, with at least ``need_bytes`` free. Nothing is
    created or changed."""
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"The output {path} is a folder; give a file name, e.g. {path / 'out.mp4'}.")
    if path.suffix.lower() not in suffixes:
        raise ValueError(
            f"Unsupported output format {path.suffix or '(no extension)'!r} for {path.name}; use one of {', '.join(suffixes)}."
        )
    folder = path.parent if str(path.parent) else Path(".")
    existing = folder
    while not existing.exists():  # the nearest folder that exists: where the new ones would be made
        if existing.parent == existing:
            break
        existing = existing.parent
    if not existing.is_dir():
        raise NotADirectoryError(f"Cannot write {path}: {existing} is a file, not a folder.")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise PermissionError(f"Cannot write {path}: the folder {existing} is not writable. Choose another output folder.")
    if path.exists() and not os.access(path, os.W_OK):
        raise PermissionError(f"Cannot write {path}: the existing file is read-only.")
    free = shutil.disk_usage(existing).free
    if free < need_bytes:
        raise OSError(
            f"Not enough disk space for {path}: {free / 2**20:.1f} MiB free in {existing}, about "
            f"{need_bytes / 2**20:.1f} MiB needed. Free some space or choose another folder."
        )
    return path


def video_file_bytes(frames: int, height: int, width: int) -> int:
    """A generous estimate of an encoded video's size (1/8 of the raw RGB frames, at least 1 MiB)."""
    return max(1 << 20, frames * height * width * 3 // 8)


# --- memory --------------------------------------------------------------------------------------


def estimate_sampling_bytes(stage, shape, *, guided: bool = True, window: int | None = None, tile: int | None = None) -> int:
    """Peak memory of sampling ``shape`` (B, 3, T, H, W) with ``stage``: the sampler's state plus one
    network call on a window of ``window`` frames (and ``tile`` pixels), with the classifier-free
    guidance batch doubled. An estimate meant to catch impossible requests, not borderline ones: about
    0.6x the peak measured with the demo base at 64-512 frames and 1.5-2.5x with the demo SSR at 256-512 px."""
    b, _, t, h, w = (int(v) for v in shape)
    if window:
        t_call = min(t, window)
    else:
        t_call = t
    hc, wc = (min(h, tile), min(w, tile)) if tile else (h, w)
    ucfg = stage.config.unet
    itemsize = torch.finfo(stage.dtype).bits // 8 if stage.dtype.is_floating_point else 4
    n = b * (2 if guided else 1)
    state = 12 * b * 3 * t * h * w * 4  # x, x0, noise, the condition and their temporaries, fp32
    heads = lambda c: max(1, c // ucfg.head_dim)  # noqa: E731
    p = ucfg.patch_size
    skips, peak_layer = 0, 0
    for level, c in enumerate(ucfg.channels):
        hl, wl = max(1, hc // (p * 2**level)), max(1, wc // (p * 2**level))
        act = n * t_call * hl * wl * c * itemsize
        skips += 2 * act  # the skip kept for the decoder, and the decoder's widened input
        attn = 0
        if ucfg.temporal_attn[level]:
            attn = max(attn, n * hl * wl * heads(c) * t_call * t_call * 4)
        if ucfg.spatial_attn[level]:
            attn = max(attn, n * t_call * heads(c) * (hl * wl) ** 2 * 4)
        if ucfg.cross_attn[level]:
            attn = max(attn, n * t_call * hl * wl * heads(c) * (stage.config.max_tokens + 1) * 4)
        peak_layer = max(peak_layer, 8 * act + attn)
    return int(state + skips + peak_layer)


def available_bytes(device: torch.device | str) -> int | None:
    """Memory free for tensors on ``device`` (CUDA: free device memory; CPU: the OS's available
    memory), or None where it cannot be read."""
    device = torch.device(device)
    if device.type == "cuda":
        try:  # free device memory plus what PyTorch holds cached but unused
            free = int(torch.cuda.mem_get_info(device)[0])
            return free + int(torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device))
        except (RuntimeError, AssertionError):
            return None
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return None


def check_memory(stage, shape, *, lower: str, guided: bool = True, window: int | None = None, tile: int | None = None) -> int:
    """Refuse a sampling call whose estimated memory exceeds what the stage's device has free.
    ``lower``: what the user can lower (named in the message). Returns the estimate."""
    need = estimate_sampling_bytes(stage, shape, guided=guided, window=window, tile=tile)
    free = available_bytes(stage.device)
    if free is not None and need > free:
        b, _, t, h, w = shape
        raise MemoryError(
            f"Sampling {t} frames of {w}x{h} (batch {b}) with {stage.source or stage.config.name or 'this stage'} needs about "
            f"{need / GIB:.1f} GiB; {free / GIB:.1f} GiB are free on {stage.device}. Lower {lower}."
        )
    return need


def check_stage_text(stages, width: int, encoder_id: str = "") -> None:
    """Every stage that reads text must read text of the encoder's width (checked before the first stage runs)."""
    for st in stages:
        if st is None:
            continue
        cfg = st.config
        if cfg.text_dim and cfg.text_dim != width:
            raise ValueError(
                f"The {cfg.role} stage {st.source or cfg.name!r} was trained with {cfg.text_encoder or 'a'} text encoder of "
                f"width {cfg.text_dim}, but the text encoder{f' {encoder_id}' if encoder_id else ''} gives {width}-wide "
                "embeddings. Use stages trained with the same encoder."
            )
