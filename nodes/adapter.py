"""The one adapter between the pack and ComfyUI's modules (folder_paths, comfy.utils,
comfy.model_management, comfy.model_patcher), with plain fallbacks so the nodes also run
(and are tested) without ComfyUI installed."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch

from ..cascade.demo import RETIRED_FILES

log = logging.getLogger(__name__)

PACK_DIR = Path(__file__).resolve().parent.parent
PACK_MODELS = PACK_DIR / "models"
FOLDER = "imagen_video"
PHENAKI_FOLDER = "phenaki"
TEXT_FOLDER = "text_encoders"

try:  # inside ComfyUI
    import comfy.model_management as mm
    import comfy.utils as comfy_utils
    import folder_paths

    IN_COMFYUI = True
except ImportError:  # standalone (tests, scripts)
    mm = comfy_utils = folder_paths = None
    IN_COMFYUI = False


class Interrupted(Exception):
    """Raised by the standalone fallback when :func:`request_interrupt` was called."""


_standalone_interrupt = False


def request_interrupt(value: bool = True) -> None:
    """Standalone stand-in for ComfyUI's Cancel button (used by tests)."""
    global _standalone_interrupt
    _standalone_interrupt = value


def register_folders() -> None:
    """``models/imagen_video`` and ``models/phenaki`` (ComfyUI's models dir plus the pack's own demo
    models), safetensors only."""
    if not IN_COMFYUI:
        return
    for folder in (FOLDER, PHENAKI_FOLDER):
        paths = [os.path.join(folder_paths.models_dir, folder), str(PACK_MODELS / folder)]
        known = folder_paths.folder_names_and_paths.get(folder)
        if known is not None:
            paths = list(dict.fromkeys(list(known[0]) + paths))
        folder_paths.folder_names_and_paths[folder] = (paths, {".safetensors"})


def _files(folder: str) -> list[str]:
    if IN_COMFYUI:
        return list(folder_paths.get_filename_list(folder))
    root = PACK_MODELS / folder
    return sorted(p.name for p in root.glob("*.safetensors")) if root.exists() else []


def list_models(folder: str = FOLDER) -> list[str]:
    """The folder's files, plus the names of retired demo files whose successor is there (so that saved
    workflows naming them still validate; :func:`model_path` loads the successor)."""
    names = _files(folder)
    if folder == FOLDER:
        names += [old for old, new in RETIRED_FILES.items() if new in names and old not in names]
    return names


_WHAT = {
    FOLDER: "Imagen Video stage files (.safetensors)",
    PHENAKI_FOLDER: "Phenaki tokenizer and transformer files (.safetensors, from `python -m cascade train --stage cvivit / maskgit`)",
}


def model_path(name: str, folder: str = FOLDER) -> str:
    successor = RETIRED_FILES.get(name) if folder == FOLDER else None
    if successor is not None and successor in (files := _files(folder)) and name not in files:
        log.warning(
            "%s was retired; loading %s, which replaced it: it samples the same step counts, but it was distilled "
            "for fewer (the number in its name), where its videos are best (CHANGELOG)",
            name,
            successor,
        )
        name = successor
    if IN_COMFYUI:
        path = folder_paths.get_full_path(folder, name)
    else:
        path = str(PACK_MODELS / folder / name)
        path = path if os.path.exists(path) else None
    if not path:
        raise FileNotFoundError(
            f"Model file {name!r} not found in models/{folder}. Put {_WHAT[folder]} there "
            f"and press 'r' to refresh the list; the demo models ship in the pack's models/{folder} folder."
        )
    return path


def list_text_encoders() -> list[str]:
    """T5 encoder files and Hugging Face encoder folders under models/text_encoders."""
    if not IN_COMFYUI:
        return []
    names = [n for n in folder_paths.get_filename_list(TEXT_FOLDER) if n.endswith(".safetensors")]
    for root in folder_paths.get_folder_paths(TEXT_FOLDER):
        if os.path.isdir(root):
            names += sorted(d + "/" for d in os.listdir(root) if os.path.isfile(os.path.join(root, d, "config.json")))
    return names


def text_encoder_path(name: str) -> str:
    if IN_COMFYUI:
        if name.endswith("/"):
            for root in folder_paths.get_folder_paths(TEXT_FOLDER):
                p = os.path.join(root, name.rstrip("/"))
                if os.path.isdir(p):
                    return p
        else:
            p = folder_paths.get_full_path(TEXT_FOLDER, name)
            if p:
                return p
    if os.path.exists(name):
        return name
    raise FileNotFoundError(f"Text encoder {name!r} not found in models/{TEXT_FOLDER}.")


def comfy_t5_tokenizer() -> str | None:
    """ComfyUI ships the T5 tokenizer (not the weights) in comfy/text_encoders/t5_tokenizer."""
    if not IN_COMFYUI:
        return None
    import comfy.text_encoders

    path = Path(comfy.text_encoders.__file__).parent / "t5_tokenizer"
    return str(path) if path.is_dir() else None


def torch_device(choice: str = "default") -> torch.device:
    if choice == "cpu":
        return torch.device("cpu")
    if IN_COMFYUI:
        return mm.get_torch_device()
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def offload_device() -> torch.device:
    return mm.unet_offload_device() if IN_COMFYUI else torch.device("cpu")


def intermediate_device() -> torch.device:
    return mm.intermediate_device() if IN_COMFYUI else torch.device("cpu")


def check_interrupt() -> None:
    if IN_COMFYUI:
        mm.throw_exception_if_processing_interrupted()
    elif _standalone_interrupt:
        raise Interrupted("Processing interrupted")


class _Holder(torch.nn.Module):
    """Holds a module whose class has a read-only ``device`` (Hugging Face models), which
    ComfyUI's ModelPatcher assigns to."""

    def __init__(self, module: torch.nn.Module):
        super().__init__()
        self.inner = module


def make_patcher(module: torch.nn.Module, load_device: torch.device):
    """A ComfyUI ModelPatcher so the model is loaded on demand and offloaded when others need memory."""
    if not IN_COMFYUI:
        return None
    import comfy.model_patcher

    if isinstance(getattr(type(module), "device", None), property):
        module = _Holder(module)
    return comfy.model_patcher.ModelPatcher(module, load_device=load_device, offload_device=offload_device())


def load_to_device(patcher, module: torch.nn.Module, device: torch.device, memory_required: int = 0) -> None:
    """Load ``module`` whole on ``device`` through ComfyUI's model management, which first frees
    other models for it and for ``memory_required`` bytes of activations. Whole: ComfyUI's partial
    loading only streams its own cast-weight layer classes, and would leave plain layers behind
    on the offload device (the loader's low_vram mode streams every layer instead)."""
    load_to_device_together([(patcher, module, device)], memory_required)


def load_to_device_together(items: list, memory_required: int = 0) -> None:
    """:func:`load_to_device` for several ``(patcher, module, device)`` in one request."""
    patchers = [p for p, _, _ in items if p is not None]
    if patchers:
        mm.load_models_gpu(patchers, memory_required=int(memory_required), force_full_load=True)
    for p, module, device in items:
        if p is None:
            module.to(device)


def free_memory(device: torch.device, memory_required: int) -> None:
    """Ask ComfyUI to unload other models until ``memory_required`` bytes are free on ``device``."""
    if IN_COMFYUI and device.type != "cpu":
        mm.free_memory(int(memory_required), device)


def unload(patcher, module: torch.nn.Module) -> None:
    """Move a model back to its offload device now (and out of ComfyUI's list of loaded models)."""
    if patcher is not None:
        for i, loaded in enumerate(list(mm.current_loaded_models)):
            if loaded.model is patcher:
                mm.current_loaded_models.pop(i).model_unload()
                break
        mm.soft_empty_cache()
    else:
        module.to(offload_device())


def soft_empty_cache() -> None:
    if IN_COMFYUI:
        mm.soft_empty_cache()


def preview_size() -> int | None:
    """ComfyUI's live-preview setting, read at every run (newer ComfyUI sets it per prompt from the
    frontend's *Live preview method*; older ones from ``--preview-method``): the largest preview
    side in pixels, or ``None`` when previews are off. Standalone: 512."""
    if not IN_COMFYUI:
        return 512
    from comfy.cli_args import LatentPreviewMethod, args

    if args.preview_method == LatentPreviewMethod.NoPreviews:
        return None
    return int(args.preview_size)


class Progress:
    """ComfyUI progress bar with previews; Cancel takes effect on every update."""

    def __init__(self, total: int, node_id=None):
        self.total, self.done = max(1, int(total)), 0
        self.bar = comfy_utils.ProgressBar(self.total, node_id=node_id) if IN_COMFYUI else None

    def update(self, done: int, preview=None) -> None:
        self.done = min(done, self.total)
        check_interrupt()
        if self.bar is not None:
            self.bar.update_absolute(self.done, self.total, preview)


def temp_directory() -> Path:
    if IN_COMFYUI:
        return Path(folder_paths.get_temp_directory())
    import tempfile

    return Path(tempfile.gettempdir()) / "imagen_video_previews"


def output_directory() -> Path:
    if IN_COMFYUI:
        return Path(folder_paths.get_output_directory())
    import tempfile

    return Path(tempfile.gettempdir()) / "imagen_video_output"


def output_video_path(prefix: str, suffix: str = ".mp4") -> Path:
    """A new numbered file under the output folder (prefix may contain sub-folders), like core savers."""
    root = output_directory().resolve()
    prefix = (prefix or "imagen_video/story").strip().replace("\\", "/")
    path = (root / prefix).resolve()
    if root not in path.parents and path != root:
        raise ValueError(f"filename_prefix {prefix!r} points outside the output folder.")
    path.parent.mkdir(parents=True, exist_ok=True)
    n = 1
    while (out := path.parent / f"{path.name}_{n:05d}_{suffix}").exists():
        n += 1
    return out


def video_from_file(path: Path):
    """ComfyUI's VIDEO object for a file (plain path outside ComfyUI)."""
    if IN_COMFYUI:
        from comfy_api.input_impl import VideoFromFile

        return VideoFromFile(str(path))
    return str(path)
