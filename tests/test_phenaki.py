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


class _Scene:
    def __init__(self, prompt, frames):
        self.prompt, self.frames = prompt, frames


def test_story_frames_continue_scene_by_scene_with_bounded_context(files):
    from cascade.phenaki import PhenakiOptions, story_frames

    ph = load_phenaki(*files[:2])  # clips of 3 token steps = 5 frames; context 2 steps = 3 frames
    calls = []
    real = ph.generate

    def spy(text, frames=None, **kw):
        ctx = kw.get("context")
        calls.append((frames, None if ctx is None else ctx.shape[2]))
        return real(text, frames, **kw)

    ph.generate = spy
    scenes = [_Scene("a", 7), _Scene("b", 3), _Scene("c", 1)]
    enc = lambda prompts: text(len(prompts))  # noqa: E731
    out = list(story_frames(ph, scenes, enc, PhenakiOptions(steps=2, context=3)))
    assert [o.shape[2] for o, _ in out] == [5, 2, 2, 1, 1] and [s for _, s in out] == [0, 0, 1, 1, 2]
    # the first clip is a whole clip; every later one re-encodes at most 3 frames (2 token steps) and adds 2
    assert calls[0] == (5, None) and all(c == (2, 3) for c in calls[1:])
    again = list(story_frames(ph, scenes, enc, PhenakiOptions(steps=2, context=3)))
    assert all(torch.equal(a, b) for (a, _), (b, _) in zip(out, again))  # same seed, same story
    with pytest.raises(ValueError, match="shorter than a clip"):
        list(story_frames(ph, scenes, enc, PhenakiOptions(context=5)))


@pytest.fixture
def cli_models(tmp_path):
    from cascade.demo import DEMO_FILES, PHENAKI_DEMO_FILES
    from cascade.text import DEFAULT_ENCODER
    from tests.test_distill_eval import minilm_stage

    models, pdir = tmp_path / "iv", tmp_path / "ph"
    for role in ("tsr", "ssr"):
        minilm_stage(role).save(models / DEMO_FILES[role])
    tok = rand(CViViT(TOK), 0)
    tid = save_tokenizer(pdir / PHENAKI_DEMO_FILES["tokenizer"], tok)
    tf = rand(
        MaskGIT(MaskGITConfig(codebook_size=TOK.codebook_size, grid=TOK.grid, dim=32, depth=1, head_dim=16, text_dim=384)), 1
    )
    info = PhenakiInfo(tokenizer_id=tid, tokenizer_config=TOK, text_encoder=DEFAULT_ENCODER, fps=4.0, steps=3)
    save_transformer(pdir / PHENAKI_DEMO_FILES["transformer"], tf, info)
    return models, pdir


def test_generate_and_story_with_the_phenaki_base(cli_models, tmp_path, capsys):
    from cascade.cli import main
    from cascade.video_io import read_video

    models, pdir = cli_models
    common = ["--models", str(models), "--base", "phenaki", "--phenaki-dir", str(pdir), "--steps", "2", "--sr-steps", "2"]
    assert main(["generate", "a red circle moving right", "-o", str(tmp_path / "a.mp4"), *common]) == 0
    video, fps = read_video(tmp_path / "a.mp4")
    assert video.shape[0] == 10 and video.shape[1:3] == (32, 32) and fps == 8  # 5 base frames -> TSR x2 -> SSR x2
    assert main(["generate", "a red circle", "-o", str(tmp_path / "b.mp4"), *common, "--base-only"]) == 0
    assert read_video(tmp_path / "b.mp4")[0].shape[:3] == (5, 16, 16)
    story = tmp_path / "s.txt"
    story.write_text("a red circle moving right | 2s\na blue square moving up | 1s\n")
    assert (
        main(
            [
                "story",
                str(story),
                "-o",
                str(tmp_path / "s.mp4"),
                "--models",
                str(models),
                "--base",
                "phenaki",
                "--phenaki-dir",
                str(pdir),
                "--base-only",
                "--phenaki-context",
                "3",  # the test's clips are 3 token steps; the default context (5 frames) is as long
            ]
        )
        == 0
    )
    assert read_video(tmp_path / "s.mp4")[0].shape[0] == 12  # 3 s at 4 fps
    capsys.readouterr()
    assert (
        main(["generate", "x", "-o", str(tmp_path / "c.mp4"), "--base", "phenaki", "--phenaki-dir", str(tmp_path / "none")]) != 0
    )
    assert "Phenaki demo file missing" in capsys.readouterr().err


def test_evaluation_part(cli_models, tmp_path):
    from cascade.evaluate import EvalConfig, evaluate

    _, pdir = cli_models
    r = evaluate(
        EvalConfig(models=str(tmp_path), out=str(tmp_path / "ev"), samples=2, batch=2, parts=("phenaki",), phenaki=str(pdir))
    )
    p = r["phenaki"]
    assert p["tokenizer"]["tokens_per_clip"] == 3 * 16 and p["tokenizer"]["tokens_per_clip_per_frame_tokenizer"] == 5 * 16
    assert 0 < p["tokenizer"]["psnr"] < 100 and p["nfe_per_video"] == 24
    assert {"seen", "held_out", "train_phrasing", "held_out_phrasing"} <= set(p) and p["seen"]["n"] == 2
    assert "## Phenaki base" in (tmp_path / "ev" / "report.md").read_text()
