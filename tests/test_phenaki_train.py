"""Training Phenaki's tokenizer and transformer: files, resume, the pair's identity, samples."""

from __future__ import annotations

import json

import pytest
import torch

from cascade.phenaki import load_phenaki, load_tokenizer, load_transformer
from cascade.phenaki_train import PhenakiTrainConfig, PhenakiTrainer
from tests.test_train import TinyEncoder

SMALL = dict(size=16, frames=5, batch=2, dim=32, depth=1, patch_size=4, warmup=2, log_every=2, checkpoint_every=2)


def test_tokenizer_then_transformer(tmp_path):
    tok_dir, tf_dir = tmp_path / "tok", tmp_path / "tf"
    cfg = PhenakiTrainConfig(model="cvivit", out=str(tok_dir), steps=4, image_fraction=0.5, sample_every=4, **SMALL)
    tr = PhenakiTrainer(cfg)
    last = tr.run()
    assert last["step"] == 4 and last["loss"] > 0
    tok, tid = load_tokenizer(tok_dir / "tokenizer.safetensors")
    assert tok.config.image_size == 16
    assert (tok_dir / "samples" / "step_4.png").exists()
    frames = {json.loads(line).get("frames") for line in (tok_dir / "log.jsonl").read_text().splitlines()}
    assert frames  # logged

    cfg2 = PhenakiTrainConfig(
        model="maskgit", out=str(tf_dir), steps=4, tokenizer=str(tok_dir / "tokenizer.safetensors"), sample_every=4, **SMALL
    )
    PhenakiTrainer(cfg2, encoder=TinyEncoder()).run()
    tf, info = load_transformer(tf_dir / "transformer.safetensors")
    assert info.tokenizer_id == tid and info.steps == 3 and info.text_encoder == "tiny-hash-encoder"
    ph = load_phenaki(tok_dir / "tokenizer.safetensors", tf_dir / "transformer.safetensors")
    video = ph.generate(TinyEncoder().encode(["a red circle"]), 5, steps=2, seed=0)
    assert video.shape == (1, 3, 5, 16, 16)
    assert (tf_dir / "samples" / "step_4.png").exists()


def test_resume_continues_the_run(tmp_path):
    out = tmp_path / "tok"
    cfg = PhenakiTrainConfig(model="cvivit", out=str(out), steps=4, **SMALL)
    PhenakiTrainer(cfg).run(steps=2)
    tr = PhenakiTrainer(cfg)
    assert tr.step == 2
    tr.run()
    steps = [json.loads(line)["step"] for line in (out / "log.jsonl").read_text().splitlines()]
    assert steps == [2, 4]
    # one uninterrupted run gives the same weights
    ref = tmp_path / "ref"
    PhenakiTrainer(PhenakiTrainConfig(model="cvivit", out=str(ref), steps=4, **SMALL)).run()
    a, _ = load_tokenizer(out / "tokenizer.safetensors")
    b, _ = load_tokenizer(ref / "tokenizer.safetensors")
    for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values()):
        torch.testing.assert_close(va, vb, msg=k)
    with pytest.raises(ValueError, match="another cvivit configuration"):
        PhenakiTrainer(PhenakiTrainConfig(model="cvivit", out=str(out), steps=6, **{**SMALL, "dim": 64}))


def test_bad_settings_are_refused_before_training(tmp_path):
    with pytest.raises(ValueError, match="needs --tokenizer"):
        PhenakiTrainConfig(model="maskgit", out=str(tmp_path))
    with pytest.raises(ValueError, match="1 \\+ n \\* 2 frames"):
        PhenakiTrainConfig(model="cvivit", out=str(tmp_path), **{**SMALL, "frames": 4})
    with pytest.raises(ValueError, match="one of"):
        PhenakiTrainConfig(model="vqgan", out=str(tmp_path))


def test_command_line(tmp_path, capsys):
    from cascade.cli import main

    out = tmp_path / "cv"
    args = ["train", "--stage", "cvivit", "--size", "16", "--frames", "5", "--batch", "2", "--dim", "32", "--depth", "1"]
    assert main([*args, "--steps", "2", "--out", str(out)]) == 0
    assert (out / "tokenizer.safetensors").exists()
    assert "training Phenaki cvivit" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="for diffusion stages: --schedule-shift"):
        main([*args, "--steps", "2", "--out", str(out), "--schedule-shift", "-2"])
    with pytest.raises(SystemExit, match="--tokenizer: settings of the Phenaki models"):
        main(["train", "--stage", "tsr", "--tokenizer", "x", "--out", str(tmp_path / "t")])


def test_data_workers_and_time_limit(tmp_path):
    here, ahead = tmp_path / "here", tmp_path / "ahead"
    PhenakiTrainer(PhenakiTrainConfig(model="cvivit", out=str(here), steps=3, **SMALL)).run()
    PhenakiTrainer(PhenakiTrainConfig(model="cvivit", out=str(ahead), steps=3, data_workers=2, **SMALL)).run()
    a, _ = load_tokenizer(here / "tokenizer.safetensors")
    b, _ = load_tokenizer(ahead / "tokenizer.safetensors")
    assert all(torch.equal(va, vb) for va, vb in zip(a.state_dict().values(), b.state_dict().values()))
    limited = PhenakiTrainer(PhenakiTrainConfig(model="cvivit", out=str(tmp_path / "t"), steps=50, time_limit=1e-9, **SMALL))
    assert limited.run()["step"] == 1 and limited.step == 1
    assert PhenakiTrainer(PhenakiTrainConfig(model="cvivit", out=str(tmp_path / "t"), steps=50, **SMALL)).step == 1
