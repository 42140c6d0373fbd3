import pytest
import torch
from safetensors.torch import save_file

from cascade.text import DEFAULT_ENCODER, TextEmbedding, load_text_encoder, t5_config_from_state_dict


@pytest.fixture(scope="module")
def minilm():
    return load_text_encoder()


def test_minilm_loads_offline_from_the_pip_package(minilm):
    emb = minilm.encode(["a red circle moving right", "a blue square moving up slowly"])
    assert emb.encoder_id == DEFAULT_ENCODER and emb.width == 384 == minilm.width
    assert emb.tokens.shape[0] == 2 and emb.mask.dtype == torch.bool
    assert emb.mask.sum(1).min() >= 5 and not emb.is_null.any()
    n = emb.mask[0].sum()
    assert torch.allclose(emb.pooled[0], emb.tokens[0, :n].mean(0), atol=1e-5)
    # different prompts -> different embeddings; same prompt -> identical (cached or not)
    assert not torch.allclose(emb.pooled[0], emb.pooled[1])
    again = minilm.encode("a red circle moving right")
    assert torch.equal(again.pooled[0], emb.pooled[0])


def test_empty_prompt_is_a_clear_error(minilm):
    with pytest.raises(ValueError, match="Empty prompt"):
        minilm.encode(["a red circle", "   "])
    with pytest.raises(ValueError, match="Empty prompt"):
        minilm.encode([])


def test_a_prompt_longer_than_the_encoder_reads_is_warned_about(minilm, caplog):
    long = " ".join(["a red circle moving right quickly"] * 60)
    with caplog.at_level("WARNING"):
        short = minilm.encode(["a red circle moving right quickly"])
        cut = minilm.encode([long])
    warned = [r.getMessage() for r in caplog.records if "tokens long" in r.getMessage()]
    assert len(warned) == 1 and f"reads the first {minilm.max_tokens}" in warned[0]
    assert cut.tokens.shape[1] == minilm.max_tokens and short.tokens.shape[1] < minilm.max_tokens


def test_missing_encoder_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        load_text_encoder(tmp_path / "nope")
    (tmp_path / "t5.bin").write_bytes(b"x")
    with pytest.raises(ValueError, match="no pickles"):
        load_text_encoder(tmp_path / "t5.bin")


def make_tokenizer(folder):
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    words = ["<pad>", "</s>", "<unk>", "a", "red", "blue", "circle", "square", "moving", "left", "right"]
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>")
    fast.save_pretrained(folder)


@pytest.fixture(scope="module")
def tiny_t5(tmp_path_factory):
    """A tiny randomly initialised T5 encoder saved as a HF folder and as one ComfyUI-layout file."""
    from transformers import T5Config, T5EncoderModel

    root = tmp_path_factory.mktemp("t5")
    torch.manual_seed(0)
    cfg = T5Config(
        vocab_size=11,
        d_model=16,
        d_kv=4,
        d_ff=32,
        num_layers=2,
        num_heads=4,
        feed_forward_proj="gated-gelu",
        relative_attention_num_buckets=8,
        is_encoder_decoder=False,
        use_cache=False,
    )
    model = T5EncoderModel(cfg).eval()
    hf = root / "hf"
    model.save_pretrained(hf)
    make_tokenizer(hf)
    tok = root / "tokenizer"
    make_tokenizer(tok)
    sd = {k: v.contiguous() for k, v in model.state_dict().items() if k != "encoder.embed_tokens.weight"}
    save_file(sd, root / "t5_tiny.safetensors")
    return root


def test_t5_from_hf_folder_and_from_comfyui_file_agree(tiny_t5):
    a = load_text_encoder(tiny_t5 / "hf")
    b = load_text_encoder(tiny_t5 / "t5_tiny.safetensors", tokenizer_path=tiny_t5 / "tokenizer")
    ea, eb = a.encode(["a red circle moving left", "blue square"]), b.encode(["a red circle moving left", "blue square"])
    assert ea.width == eb.width == 16
    assert torch.equal(ea.mask, eb.mask) and ea.mask[1].sum() == 3  # "blue square </s>"
    assert torch.allclose(ea.tokens, eb.tokens, atol=1e-5)
    assert torch.allclose(ea.pooled, eb.pooled, atol=1e-5)
    assert eb.encoder_id == "t5-encoder:d16-l2-h4-ff32-gated-gelu"


def test_t5_file_needs_a_tokenizer(tiny_t5):
    with pytest.raises(ValueError, match="tokenizer_path"):
        load_text_encoder(tiny_t5 / "t5_tiny.safetensors")


def test_t5_config_inference_rejects_other_files():
    with pytest.raises(ValueError, match="not a T5 encoder"):
        t5_config_from_state_dict({"a": torch.zeros(1)})


def test_text_embedding_batching():
    a = TextEmbedding(torch.ones(1, 2, 4), torch.ones(1, 2, dtype=torch.bool), torch.ones(1, 4), "x")
    b = TextEmbedding.null(2, 4)
    c = TextEmbedding.concat([a, b])
    assert c.tokens.shape == (3, 2, 4) and c.is_null.tolist() == [False, True, True]
    assert c.encoder_id == "x"
    with pytest.raises(ValueError, match="different widths"):
        TextEmbedding.concat([a, TextEmbedding.null(1, 5)])
    with pytest.raises(ValueError, match="tokens"):
        TextEmbedding(torch.ones(1, 2, 4), torch.ones(1, 3, dtype=torch.bool), torch.ones(1, 4))
