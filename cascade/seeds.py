"""The one seed rule of every sampling path (generate, windows, tiles, chunked SR, story, nodes).

* A cascade run with seed ``S`` runs each stage with :func:`stage_seed` ``(S, role)``: the base
  with ``S``, the TSR with ``S + 1``, the SSR with ``S + 2`` (other roles: a hash of ``S`` and the
  role name). A TSR applied in ``k`` repeated passes uses ``seed + p`` for pass ``p``.
* Inside a stage run with seed ``s``, every random number is Gaussian noise of one *frame*, drawn
  from a generator seeded with :func:`derive_seed` ``(s, purpose, absolute frame index)``: the
  initial noise, the noise augmentation of the input, each stochastic step's noise and the
  replacement noise of training-free continuation are separate purposes. Noise is drawn on the
  CPU and moved, so it is identical on every device.

So a frame's noise depends only on the seed, the purpose and where the frame sits in the whole
video: windows, tiles, chunks, streamed story windows and a one-shot run see the same noise for
the same frame, and the same seed with the same inputs gives the same video on every path.
"""

from __future__ import annotations

import hashlib

import torch

__all__ = ["SALT_AUG", "SALT_INIT", "SALT_REPLACE", "SALT_STEP", "derive_seed", "frame_noise", "stage_seed"]

SALT_INIT, SALT_AUG, SALT_STEP, SALT_REPLACE = 0, 1, 2, 3
_STAGE_OFFSET = {"base": 0, "tsr": 1, "ssr": 2}


def derive_seed(seed: int, *keys) -> int:
    """A 63-bit seed derived from ``seed`` and ``keys`` (stable across runs, platforms and versions)."""
    text = ":".join(str(int(k)) if isinstance(k, (int, bool)) else str(k) for k in (seed, *keys))
    h = hashlib.blake2b(text.encode(), digest_size=8).digest()
    return int.from_bytes(h, "little") & 0x7FFF_FFFF_FFFF_FFFF


def stage_seed(seed: int, role: str) -> int:
    """The seed a stage of ``role`` samples with in a cascade run of seed ``seed``."""
    if role in _STAGE_OFFSET:
        return int(seed) + _STAGE_OFFSET[role]
    return derive_seed(seed, "stage", role)


def frame_noise(seed: int, salt: int, shape, frame_offset: int = 0, device="cpu") -> torch.Tensor:
    """Standard normal noise ``(B, C, T, H, W)`` whose frame ``t`` depends only on
    ``(seed, salt, frame_offset + t)`` (drawn on the CPU, so identical on every device)."""
    b, c, t, h, w = shape
    out = torch.empty(b, c, t, h, w)
    g = torch.Generator()
    for i in range(t):
        g.manual_seed(derive_seed(seed, salt, frame_offset + i))
        out[:, :, i] = torch.randn(b, c, h, w, generator=g)
    return out.to(device)
