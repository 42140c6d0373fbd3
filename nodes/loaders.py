"""Loader and text nodes."""

from __future__ import annotations

from ..cascade.checks import resolve_precision
from ..cascade.stage import load_stage
from ..cascade.text import load_text_encoder
from . import adapter
from .convert import text_to_conditioning
from .models import MODEL_TYPE, OFFLOAD_MODES, TEXT_ENCODER_TYPE, ImagenVideoModel, ImagenVideoTextEncoder

CATEGORY = "Imagen Video"
EMBEDDED_ENCODER = "all-MiniLM-L6-v2 (embedded)"


class ImagenVideoModelLoader:
    DESCRIPTION = (
        "Loads an Imagen Video stage (base, SSR or TSR; teacher or distilled student) from models/imagen_video. "
        "The stage's role, sizes and text encoder are read from the file; the model is moved to the GPU only while a node samples with it."
    )
    CATEGORY = f"{CATEGORY}/loaders"
    RETURN_TYPES = (MODEL_TYPE,)
    RETURN_NAMES = ("model",)
    OUTPUT_TOOLTIPS = ("The loaded stage; connect it to the matching stage node.",)
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model_name": (
                    adapter.list_models(),
                    {"tooltip": "A stage file (.safetensors) from models/imagen_video. The demo cascade ships with the pack."},
                ),
                "precision": (
                    ["auto", "fp32", "fp16", "bf16"],
                    {
                        "default": "auto",
                        "tooltip": "Weight precision. auto: bf16 (or fp16) on a GPU, fp32 on the CPU. On a CPU with "
                        "AVX-512-BF16 or AMX, bf16 samples faster; fp16 is for GPUs (slow on a CPU).",
                    },
                ),
                "device": (
                    ["default", "cpu"],
                    {"default": "default", "tooltip": "default: ComfyUI's main device (GPU if any); cpu: always run on the CPU."},
                ),
            },
            "optional": {
                "offload": (
                    OFFLOAD_MODES,
                    {
                        "default": "auto",
                        "tooltip": "auto: stays on the GPU until ComfyUI needs the memory; after_use: back to the CPU as soon "
                        "as a node is done with it; low_vram: weights stay in CPU RAM and visit the GPU one layer at a "
                        "time (for stages larger than the GPU; slower).",
                    },
                ),
            },
        }

    def load(self, model_name, precision="auto", device="default", offload="auto"):
        if offload not in OFFLOAD_MODES:
            raise ValueError(f"offload must be one of {OFFLOAD_MODES}; received {offload!r}.")
        path = adapter.model_path(model_name)
        dev = adapter.torch_device(device)
        stage = load_stage(path, device="cpu", dtype=resolve_precision(precision, dev))
        stage.net.to(adapter.offload_device())
        return (ImagenVideoModel(stage, model_name, dev, adapter.make_patcher(stage.net, dev), offload),)


class ImagenVideoTextEncoderLoader:
    DESCRIPTION = (
        "Loads a frozen text encoder with transformers: the embedded all-MiniLM-L6-v2 (works offline, what the demo cascade uses), "
        "a T5 encoder file from models/text_encoders (with ComfyUI's T5 tokenizer), or a Hugging Face encoder folder there."
    )
    CATEGORY = f"{CATEGORY}/conditioning"
    RETURN_TYPES = (TEXT_ENCODER_TYPE,)
    RETURN_NAMES = ("text_encoder",)
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "encoder": (
                    [EMBEDDED_ENCODER, *adapter.list_text_encoders()],
                    {"tooltip": "The encoder your stages were trained with (the demo cascade: all-MiniLM-L6-v2)."},
                ),
                "device": (["default", "cpu"], {"default": "default", "tooltip": "Where the encoder runs."}),
                "max_tokens": (
                    "INT",
                    {"default": 64, "min": 1, "max": 512, "tooltip": "Prompts are truncated to this many tokens."},
                ),
            },
            "optional": {
                "tokenizer": (
                    "STRING",
                    {
                        "default": "",
                        "tooltip": "Tokenizer folder for a T5 .safetensors file; empty: ComfyUI's bundled T5 tokenizer.",
                    },
                ),
            },
        }

    def load(self, encoder, device="default", max_tokens=64, tokenizer=""):
        dev = adapter.torch_device(device)
        home = adapter.offload_device()  # loaded on dev through model management only while it encodes
        if encoder == EMBEDDED_ENCODER:
            enc = load_text_encoder(None, device=home, max_tokens=max_tokens)
        else:
            path = adapter.text_encoder_path(encoder)
            tok = tokenizer.strip() or (adapter.comfy_t5_tokenizer() if path.endswith(".safetensors") else None)
            enc = load_text_encoder(path, tokenizer_path=tok, device=home, max_tokens=max_tokens)
        return (ImagenVideoTextEncoder(enc, encoder, dev, adapter.make_patcher(enc.model, dev)),)


class ImagenVideoTextEncode:
    DESCRIPTION = "Encodes a prompt into CONDITIONING for Imagen Video stages (token embeddings, mask and pooled vector)."
    CATEGORY = f"{CATEGORY}/conditioning"
    RETURN_TYPES = ("CONDITIONING",)
    OUTPUT_TOOLTIPS = ("The encoded prompt; connect it to positive (or negative) of the stage nodes.",)
    FUNCTION = "encode"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "text_encoder": (TEXT_ENCODER_TYPE, {"tooltip": "From ImagenVideoTextEncoderLoader."}),
                "text": (
                    "STRING",
                    {
                        "multiline": True,
                        "dynamicPrompts": True,
                        "default": "a red circle moving right quickly",
                        "tooltip": "What the video should show.",
                    },
                ),
            }
        }

    def encode(self, text_encoder, text):
        if not isinstance(text, str) or not text.strip():
            raise ValueError("The prompt is empty: write what the video should show, e.g. 'a red circle moving right quickly'.")
        return (text_to_conditioning(text_encoder.encode(text.strip())),)
