"""Phenaki files (tokenizer + transformer that belong together) and generation/continuation."""

from __future__ import annotations

import pytest
import torch

from cascade.checkpoint import CheckpointError
from cascade.cvivit import CViViT, CViViTConfig
from cascade.maskgit import MaskGIT, MaskGITConfig
from cascade.phenaki import (
    Phenaki,
    PhenakiInfo,
    load_phenaki,
    load_tokenizer,
    load_transformer,
    save_tokenizer,
    save_transformer,
    tokenizer_id,
)
from cascade.text import TextEmbedding

TOK = CViViTConfig(
    image_size=16, patch_size=4, temporal_patch=2, dim=32, spatial_depth=1, temporal_depth=1, head_dim=16, ff_mult=2
)
TF = MaskGITConfig(codebook_size=TOK.codebook_size, grid=TOK.grid, dim=32, depth=1, head_dim=16, ff_mult=2, text_dim=8)


def rand(net, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.2)
    return net.eval()


def text(b=1):
    g = torch.Generator().manual_seed(0)
    return TextEmbedding(torch.randn(b, 3, 8, generator=g), torch.ones(b, 3, dtype=torch.bool), torch.randn(b, 8, generator=g))


@pytest.fixture
def files(tmp_path):
    tok = rand(CViViT(TOK), 0)
    tid = save_tokenizer(tmp_path / "tok.safetensors", tok)
    info = PhenakiInfo(tokenizer_id=tid, tokenizer_config=TOK, text_encoder="minilm", fps=4.0, steps=3)
    save_transformer(tmp_path / "tf.safetensors", rand(MaskGIT(TF), 1), info)
    return tmp_path / "tok.safetensors", tmp_path / "tf.safetensors", tok


def test_files_round_trip(files, tmp_path):
    tok_path, tf_path, tok = files
    loaded, tid = load_tokenizer(tok_path)
    assert tid == tokenizer_id(tok)
    video = torch.rand(1, 3, 5, 16, 16) * 2 - 1
    assert torch.equal(loaded.tokenize(video), tok.tokenize(video))
    tf, info = load_transformer(tf_path)
    assert info.tokenizer_id == tid and info.steps == 3 and info.tokenizer_config == TOK and info.fps == 4.0
    # stored in half precision: the id is that of the stored weights, and it survives the round trip
    tid16 = save_tokenizer(tmp_path / "tok16.safetensors", tok, dtype=torch.float16)
    assert tid16 != tid and load_tokenizer(tmp_path / "tok16.safetensors")[1] == tid16


def test_a_pair_that_does_not_belong_together_is_refused(files, tmp_path):
    tok_path, tf_path, _ = files
    assert isinstance(load_phenaki(tok_path, tf_path), Phenaki)
    other = tmp_path / "other.safetensors"
    save_tokenizer(other, rand(CViViT(TOK), 5))  # same shape, other weights: other tokens
    with pytest.raises(CheckpointError, match="another tokenizer"):
        load_phenaki(other, tf_path)
    small = CViViTConfig(
        image_size=8, patch_size=4, temporal_patch=2, dim=32, spatial_depth=1, temporal_depth=1, head_dim=16, ff_mult=2
    )
    tf, info = load_transformer(tf_path)
    with pytest.raises(CheckpointError, match="do not belong together"):
        Phenaki(CViViT(small), tf, info)
    with pytest.raises(CheckpointError, match="not a Phenaki transformer"):
        load_phenaki(tok_path, tok_path)
    with pytest.raises(CheckpointError, match="not a Phenaki tokenizer"):
        load_tokenizer(tf_path)


def test_generate_is_seeded_and_continues_from_fixed_context_tokens(files):
    ph = load_phenaki(*files[:2])
    a = ph.generate(text(), 5, steps=3, seed=1)
    assert a.shape == (1, 3, 5, 16, 16) and float(a.abs().max()) <= 1
    assert torch.equal(a, ph.generate(text(), 5, steps=3, seed=1))
    assert not torch.equal(a, ph.generate(text(), 5, steps=3, seed=2))
    assert ph.generate(text(), steps=2).shape[2] == 5  # the file's default: 3 token steps
    ctx = a[:, :, -3:]  # 1 + 1 * t_p frames: 2 token steps
    seen = []
    b = ph.generate(text(), 4, steps=3, seed=1, context=ctx, callback=lambda i, ids: seen.append(ids.clone()))
    assert b.shape == (1, 3, 4, 16, 16)
    want = ph.tokenizer.tokenize(ctx)
    assert all(torch.equal(ids[:, :2], want) for ids in seen)
    with pytest.raises(ValueError, match="1 \\+ n \\* 2 frames"):
        ph.generate(text(), 4)
    with pytest.raises(ValueError, match="multiple of 2"):
        ph.generate(text(), 3, context=ctx)
