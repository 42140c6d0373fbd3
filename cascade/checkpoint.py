"""Stage checkpoints: safetensors only, with the stage configuration in the file's metadata.

Loading validates the header, the role, every key and every shape, and names the file, the key,
the expected and the found values. Pickled checkpoints (``.pt``, ``.ckpt``, ``.pth``, ``.bin``)
are refused, never unpickled.
"""

from __future__ import annotations

import json
import logging
import os
import struct
import tempfile
from pathlib import Path

import torch

from .config import FORMAT_VERSION, StageConfig

log = logging.getLogger(__name__)

__all__ = [
    "CheckpointError",
    "atomic_save_safetensors",
    "check_safetensors_file",
    "load_stage_file",
    "read_stage_config",
    "save_stage_file",
]

FORMAT_NAME = "imagen-video-stage"
_PICKLE_SUFFIXES = {".pt", ".pth", ".ckpt", ".bin", ".pkl", ".pickle"}
_MAX_HEADER = 100 * 1024 * 1024


class CheckpointError(ValueError):
    """A checkpoint file is missing, corrupt, of the wrong kind or does not match its config."""


def _refuse_pickle(path: Path, why: str) -> CheckpointError:
    return CheckpointError(
        f"{path.name}: {why}. Pickled checkpoints are never loaded (they can run arbitrary code). "
        "Convert it once, in a Python you trust, with:  "
        "python -m cascade convert OLD.pt NEW.safetensors --config stage.json  "
        "(or: torch.load(OLD, weights_only=True) then safetensors.torch.save_file)."
    )


def check_safetensors_file(path: str | os.PathLike) -> dict:
    """Validate a safetensors file's framing without loading tensors; return its parsed header.

    Refuses pickles and reports truncated or corrupt files clearly.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"Checkpoint not found: {path}")
    if path.is_dir():
        raise IsADirectoryError(f"{path} is a folder, not a stage file: give the path of the .safetensors file inside it.")
    if path.suffix.lower() in _PICKLE_SUFFIXES:
        raise _refuse_pickle(path, f"'{path.suffix}' files are PyTorch pickles")
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(9)
        if head[:2] == b"PK" or (head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05") and head[8:9] != b"{"):
            raise _refuse_pickle(path, "this file is a PyTorch pickle (zip/pickle data), not safetensors")
        if len(head) < 9:
            raise CheckpointError(f"{path.name}: file is truncated ({size} bytes); it is not a valid safetensors file.")
        (n,) = struct.unpack("<Q", head[:8])
        if head[8:9] != b"{" or n > min(size - 8, _MAX_HEADER):
            raise CheckpointError(
                f"{path.name}: corrupt or truncated safetensors header (declares {n} header bytes, file has {size}). "
                "Re-download or re-export the file."
            )
        f.seek(8)
        try:
            header = json.loads(f.read(n))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise CheckpointError(f"{path.name}: corrupt safetensors header ({e}).") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{path.name}: corrupt safetensors header (not a JSON object).")
    end = 0
    for key, info in header.items():
        if key == "__metadata__":
            continue
        try:
            end = max(end, int(info["data_offsets"][1]))
        except (KeyError, TypeError, IndexError, ValueError):
            raise CheckpointError(f"{path.name}: corrupt safetensors header entry for {key!r}.") from None
    if 8 + n + end > size:
        raise CheckpointError(
            f"{path.name}: file is truncated: tensors need {8 + n + end} bytes but the file has {size}. "
            "The download or copy was interrupted; fetch the file again."
        )
    return header


def read_stage_config(path: str | os.PathLike) -> StageConfig:
    """The :class:`StageConfig` stored in a stage file's metadata (tensors are not read)."""
    path = Path(path)
    header = check_safetensors_file(path)
    meta = header.get("__metadata__") or {}
    if meta.get("format") != FORMAT_NAME or "config" not in meta:
        raise CheckpointError(
            f"{path.name} is a safetensors file but not an Imagen Video stage (no '{FORMAT_NAME}' metadata). "
            "Stage files are written by `python -m cascade train/export`."
        )
    version = int(meta.get("format_version", "0"))
    if version > FORMAT_VERSION:
        raise CheckpointError(
            f"{path.name} uses stage format {version}; this pack reads up to {FORMAT_VERSION}. Update the pack."
        )
    try:
        return StageConfig.from_dict(json.loads(meta["config"]))
    except (json.JSONDecodeError, TypeError, KeyError, ValueError) as e:
        raise CheckpointError(f"{path.name}: invalid stage configuration in metadata: {e}") from None


def atomic_save_safetensors(tensors: dict[str, torch.Tensor], path: str | os.PathLike, metadata: dict[str, str]) -> None:
    """Write to a temporary file in the same folder, fsync, then rename: never a half-written file."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, tmp, metadata=metadata)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def remove_stale_temporaries(path: str | os.PathLike) -> int:
    """Delete temporary files a killed :func:`atomic_save_safetensors` of ``path`` left behind
    (``.NAME.*.tmp`` beside it); returns how many. Called before every save and when training starts."""
    path = Path(path)
    n = 0
    for tmp in path.parent.glob(f".{path.name}.*.tmp"):
        try:
            tmp.unlink()
            n += 1
        except OSError:
            pass
    if n:
        log.info("removed %d stale temporary file(s) of %s left by an interrupted save", n, path.name)
    return n


def save_stage_file(
    path: str | os.PathLike, state_dict: dict[str, torch.Tensor], config: StageConfig, dtype: torch.dtype | None = None
) -> None:
    tensors = {k: (v.to(dtype) if dtype is not None and v.is_floating_point() else v) for k, v in state_dict.items()}
    meta = {"format": FORMAT_NAME, "format_version": str(FORMAT_VERSION), "config": config.to_json()}
    atomic_save_safetensors(tensors, path, meta)


def load_stage_file(
    path: str | os.PathLike,
    expected_keys: dict[str, torch.Size],
    *,
    role: str | None = None,
    device: torch.device | str = "cpu",
) -> tuple[StageConfig, dict[str, torch.Tensor]]:
    """Read a stage file, checking role and every key and shape against ``expected_keys``."""
    from safetensors.torch import load_file

    path = Path(path)
    config = read_stage_config(path)
    if role is not None and config.role != role:
        raise CheckpointError(
            f"{path.name} is a {config.describe()} stage, but a {role} stage was expected here. "
            f"Pick a {role} model for this node."
        )
    try:
        sd = load_file(str(path), device=str(device))
    except Exception as e:  # safetensors raises its own error types, which differ between versions
        raise CheckpointError(f"{path.name}: could not read tensors ({e}). The file is corrupt; re-export it.") from None
    check_state_dict(sd, expected_keys, path.name)
    return config, sd


def check_state_dict(sd: dict[str, torch.Tensor], expected: dict[str, torch.Size], name: str) -> None:
    missing = sorted(set(expected) - set(sd))
    unexpected = sorted(set(sd) - set(expected))
    if missing or unexpected:
        raise CheckpointError(
            f"{name}: weights do not match the configuration in its metadata: "
            f"{len(missing)} missing (first: {missing[:3]}), {len(unexpected)} unexpected (first: {unexpected[:3]})."
        )
    for k, shape in expected.items():
        if tuple(sd[k].shape) != tuple(shape):
            raise CheckpointError(f"{name}: key {k!r} expected shape {tuple(shape)}, found {tuple(sd[k].shape)}.")
        if sd[k].is_floating_point() and not bool(torch.isfinite(sd[k]).all()):
            raise CheckpointError(f"{name}: key {k!r} contains NaN or inf values; the checkpoint is corrupt.")
