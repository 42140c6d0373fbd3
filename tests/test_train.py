import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import tiny_unet
from safetensors.torch import load_file

from cascade.checkpoint import read_stage_config
from cascade.config import StageConfig
from cascade.data.sources import ShapesSource, VideoFolderSource
from cascade.stage import load_stage
from cascade.train import TrainConfig, Trainer, build_batch, overfit_one_batch
from cascade.video_io import write_video

ROOT = Path(__file__).resolve().parent.parent


class TinyEncoder:
    """A deterministic stand-in for the text encoder (keeps training tests fast)."""

    encoder_id, width = "tiny-hash-encoder", 8

    def encode(self, prompts):
        from cascade.text import TextEmbedding

        prompts = [prompts] if isinstance(prompts, str) else prompts
        g = [torch.Generator().manual_seed(sum(map(ord, p))) for p in prompts]
        toks = torch.stack([torch.randn(3, 8, generator=gi) for gi in g])
        return TextEmbedding(toks, torch.ones(len(prompts), 3, dtype=torch.bool), toks.mean(1), self.encoder_id)


def stage_cfg(role, **kw):
    cond = {"base": 4 if kw.get("continuation") else 0, "ssr": 3, "tsr": 4}[role]
    extra = {"ssr": {"spatial_factor": 2.0, "height": 16, "width": 16}, "tsr": {"temporal_factor": 2}}.get(role, {})
    fields = {"frames": 4, "height": 8, "width": 8, "text_dim": 8, "text_encoder": "tiny-hash-encoder", **extra}
    fields.update(kw)
    return StageConfig(
        role=role, unet=tiny_unet(cond_channels=cond, aug_cond=role != "base" or kw.get("continuation", False)), **fields
    )


def train_cfg(tmp_path, role="base", **kw):
    base = dict(
        stage=stage_cfg(role),
        out=str(tmp_path / role),
        steps=4,
        batch=2,
        lr=1e-3,
        warmup=2,
        checkpoint_every=2,
        log_every=1,
        frame_skip=1,
    )
    base.update(kw)
    return TrainConfig(**base)


@pytest.mark.parametrize("role", ["base", "ssr", "tsr"])
def test_training_runs_logs_checkpoints_and_exports(tmp_path, role):
    cfg = train_cfg(tmp_path, role, image_fraction=0.5 if role != "tsr" else 0.0)
    tr = Trainer(cfg, encoder=TinyEncoder())
    tr.run()
    out = Path(cfg.out)
    logs = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in logs] == [1, 2, 3, 4] and all(np.isfinite(r["loss"]) for r in logs)
    assert logs[-1]["loss_by_logsnr"]  # loss by noise level is logged
    stage = load_stage(out / "stage.safetensors", role=role)
    assert stage.config == cfg.stage.replace(notes=stage.config.notes)
    assert "trained 4 steps" in stage.config.notes


def test_continuation_base_batches_mix_known_frames(tmp_path):
    cfg = train_cfg(tmp_path, stage=stage_cfg("base", continuation=True), batch=16, continuation_mix=(0.25, 0.25, 0.25, 0.25))
    b = build_batch(cfg, ShapesSource(frames=4, size=8), 0, 16)
    sums = b["known_mask"].sum(1)
    assert (sums == 0).any() and (sums > 0).any()
    Trainer(cfg, encoder=TinyEncoder()).run(steps=2)


def test_build_batch_derives_stage_pairs_from_the_same_clip(tmp_path):
    ssr = train_cfg(tmp_path, "ssr")
    b = build_batch(ssr, ShapesSource(), 0, 2)
    assert b["x"].shape == (2, 3, 4, 16, 16) and b["low"].shape == (2, 3, 4, 8, 8)
    assert b["x"].min() >= -1 and b["x"].max() <= 1
    tsr = train_cfg(tmp_path, "tsr", tsr_interpolate_fraction=0.0)
    b = build_batch(tsr, ShapesSource(), 0, 2)
    assert torch.equal(b["low"], b["x"][:, :, ::2])  # frame skipping


def test_resume_continues_exactly(tmp_path):
    enc = TinyEncoder()
    straight = Trainer(train_cfg(tmp_path / "a", checkpoint_every=0), encoder=enc)
    straight.run(steps=4)
    first = Trainer(train_cfg(tmp_path / "b"), encoder=enc)
    first.run(steps=2)
    resumed = Trainer(train_cfg(tmp_path / "b"), encoder=enc)
    assert resumed.step == 2
    resumed.run(steps=4)
    a = straight.acc.unwrap_model(straight.model).state_dict()
    b = resumed.acc.unwrap_model(resumed.model).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert all(torch.equal(x, y) for x, y in zip(straight.ema.state_dict().values(), resumed.ema.state_dict().values()))


def test_a_resumed_run_cleans_up_after_a_killed_save_and_does_not_repeat_log_steps(tmp_path):
    """A run killed after step 4 with its last checkpoint at step 2 (and a half-written save): the
    resumed run removes the stale temporary file and its log has every step exactly once."""
    enc = TinyEncoder()
    cfg = train_cfg(tmp_path / "k", checkpoint_every=2, log_every=1)
    Trainer(cfg, encoder=enc).run(steps=2)
    out = Path(cfg.out)
    with open(out / "log.jsonl", "a") as f:  # steps 3 and 4 were logged, then the process was killed
        f.write('{"step": 3, "loss": 1.0}\n{"step": 4, "loss": 1.0}\n{"step": 5, "lo')
    stale = out / ".state.safetensors.x1y2z3.tmp"
    stale.write_bytes(b"\0" * 4096)
    resumed = Trainer(cfg, encoder=enc)
    assert resumed.step == 2
    resumed.run(steps=4)
    assert not stale.exists() and not list(out.glob(".*.tmp"))
    steps = [json.loads(x)["step"] for x in (out / "log.jsonl").read_text().splitlines() if '"loss"' in x]
    assert steps == [1, 2, 3, 4]


def test_skipped_videos_are_summed_up(tmp_path, caplog):
    root = make_video_folder(tmp_path / "vids", n=1, frames=12)
    (root / "broken.mp4").write_bytes(b"not a video")
    (root / "broken.txt").write_text("a broken clip")
    cfg = train_cfg(tmp_path, data=str(root), frame_skip=2, batch=4)
    with caplog.at_level("WARNING"):
        tr = Trainer(cfg, encoder=TinyEncoder())
        tr.run(steps=2)
    assert tr.source.skipped  # 8 draws from 2 files reached the broken one
    summary = [r.getMessage() for r in caplog.records if "were skipped" in r.getMessage()]
    assert summary and summary[-1].startswith("1 of 2 videos") and "broken.mp4" in summary[-1]


def test_resume_refuses_a_different_stage(tmp_path):
    Trainer(train_cfg(tmp_path), encoder=TinyEncoder()).run(steps=2)
    other = train_cfg(tmp_path, stage=stage_cfg("base").replace(unet=tiny_unet(channels=(8, 8))))
    with pytest.raises(ValueError, match="different stage configuration"):
        Trainer(other, encoder=TinyEncoder())


def test_text_width_mismatch_is_refused_before_training(tmp_path):
    cfg = train_cfg(tmp_path, stage=stage_cfg("base"))

    class Wide(TinyEncoder):
        width, encoder_id = 16, "wide"

    with pytest.raises(ValueError, match="8-wide text but the text encoder wide is 16 wide"):
        Trainer(cfg, encoder=Wide())


def test_config_errors_before_training(tmp_path):
    with pytest.raises(ValueError, match="cannot learn from still images"):
        train_cfg(tmp_path, "tsr", image_fraction=0.5)
    with pytest.raises(ValueError, match="multiple of the factor"):
        train_cfg(tmp_path, "tsr", clip_frames=5)
    with pytest.raises(ValueError, match="crop must be"):
        train_cfg(tmp_path, "ssr", crop=10)


def test_sr_stages_train_on_crops_and_a_base_refuses_them(tmp_path):
    tsr = train_cfg(tmp_path, "tsr", stage=stage_cfg("tsr", height=16, width=16), crop=8, tsr_interpolate_fraction=0.0)
    b = build_batch(tsr, ShapesSource(), 0, 2)
    assert b["x"].shape == (2, 3, 4, 8, 8) and torch.equal(b["low"], b["x"][:, :, ::2])
    ssr = build_batch(train_cfg(tmp_path, "ssr", crop=8), ShapesSource(), 0, 2)
    assert ssr["x"].shape == (2, 3, 4, 8, 8) and ssr["low"].shape == (2, 3, 4, 4, 4)
    with pytest.raises(ValueError, match="crop is for SR stages"):
        train_cfg(tmp_path, "base", crop=8)


def test_learning_rate_warms_up_then_decays_to_zero(tmp_path):
    tr = Trainer(train_cfg(tmp_path, steps=100, warmup=10, lr=1e-3, lr_decay="cosine"), encoder=TinyEncoder())
    lrs = [tr.learning_rate(s) for s in range(101)]
    assert lrs[0] == pytest.approx(1e-4) and lrs[9] == pytest.approx(1e-3) and lrs[10] == pytest.approx(1e-3)
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:])) and lrs[100] == pytest.approx(0, abs=1e-12)
    assert lrs[55] == pytest.approx(5e-4)  # halfway through the decay
    const = Trainer(train_cfg(tmp_path / "c", steps=100, warmup=10, lr=1e-3), encoder=TinyEncoder())
    assert const.learning_rate(99) == 1e-3
    linear = Trainer(train_cfg(tmp_path / "l", steps=100, warmup=10, lr=1e-3, lr_decay="linear"), encoder=TinyEncoder())
    assert linear.learning_rate(55) == pytest.approx(5e-4) and linear.learning_rate(100) == pytest.approx(0, abs=1e-12)
    with pytest.raises(ValueError, match="lr_decay"):
        train_cfg(tmp_path, lr_decay="exponential")


def test_init_from_starts_a_run_from_a_stage_file(tmp_path):
    Trainer(train_cfg(tmp_path / "a"), encoder=TinyEncoder()).run(steps=2)
    src = load_stage(tmp_path / "a" / "base" / "stage.safetensors")
    tr = Trainer(train_cfg(tmp_path / "b", init_from=str(tmp_path / "a" / "base" / "stage.safetensors")), encoder=TinyEncoder())
    assert tr.step == 0
    for k, v in src.net.state_dict().items():
        assert torch.equal(tr.net.state_dict()[k], v) and torch.equal(tr.ema.state_dict()[k], v)
    tr.run(steps=1)  # and it trains on; its file says what it started from
    notes = read_stage_config(tr.out / "stage.safetensors").notes
    assert notes.endswith(", initialised from stage.safetensors (trained 2 steps on shapes)"), notes
    other = train_cfg(tmp_path / "c", "ssr", init_from=str(tmp_path / "a" / "base" / "stage.safetensors"))
    with pytest.raises(ValueError, match="same role and U-Net configuration"):
        Trainer(other, encoder=TinyEncoder())


def test_init_from_may_add_a_frame_phase_embedding(tmp_path):
    Trainer(train_cfg(tmp_path / "a"), encoder=TinyEncoder()).run(steps=2)
    src = load_stage(tmp_path / "a" / "base" / "stage.safetensors")
    s = stage_cfg("base")
    phased = s.replace(unet=replace(s.unet, frame_phase=True))
    cfg = train_cfg(tmp_path / "b", stage=phased, init_from=str(tmp_path / "a" / "base" / "stage.safetensors"))
    tr = Trainer(cfg, encoder=TinyEncoder())
    for k, v in src.net.state_dict().items():
        assert torch.equal(tr.net.state_dict()[k], v)
    assert not tr.net.frame_emb.mlp[2].weight.any()  # the new embedding starts as a no-op
    tr.run(steps=2)
    assert tr.net.frame_emb.mlp[2].weight.any()  # and it learns
    assert load_stage(tr.out / "stage.safetensors").config.unet.frame_phase


def test_overfit_one_batch_learns(tmp_path):
    r = overfit_one_batch(train_cfg(tmp_path, lr=3e-3), steps=60, encoder=TinyEncoder())
    assert r["ratio"] > 1.5, r


def make_video_folder(root: Path, n=3, frames=10, captions=True):
    root.mkdir(parents=True)
    src = ShapesSource(frames=frames, size=16)
    for i in range(n):
        video, cap = src.clip(i)
        write_video(root / f"clip{i}.mp4", video, fps=8)
        if captions:
            (root / f"clip{i}.txt").write_text(cap)
    return root


def test_video_folder_source(tmp_path):
    root = make_video_folder(tmp_path / "vids")
    (root / "broken.mp4").write_bytes(b"not a video")
    (root / "broken.txt").write_text("a broken clip")
    src = VideoFolderSource(root, min_frames=8)
    clips = [src.clip(i, frames=4, size=8, frame_step=2) for i in range(40)]
    assert all(v.shape == (4, 8, 8, 3) for v, _ in clips)
    assert "broken.mp4" in " ".join(src.skipped)  # skipped with a warning, counted, no crash


def test_video_folder_missing_captions_lists_files(tmp_path):
    root = make_video_folder(tmp_path / "nocap", captions=False)
    with pytest.raises(ValueError, match=r"(?s)3 video\(s\) .* have no caption.*clip0.mp4"):
        VideoFolderSource(root)


def test_video_folder_all_too_short(tmp_path):
    root = make_video_folder(tmp_path / "short", frames=3)
    with pytest.raises(ValueError, match="None of the 3 videos"):
        VideoFolderSource(root).clip(0, frames=4, frame_step=2)


def test_train_on_a_video_folder(tmp_path):
    root = make_video_folder(tmp_path / "vids", frames=12)
    cfg = train_cfg(tmp_path, data=str(root), frame_skip=2)
    tr = Trainer(cfg, encoder=TinyEncoder())
    batch = tr.make_batch(0)
    captions = {(root / f"clip{i}.txt").read_text() for i in range(3)}
    assert set(batch["captions"]) <= captions and batch["x"].shape == (2, 3, 4, 8, 8)  # clips of the folder, resized
    assert batch["x"].std() > 0.05  # real frames, not blank padding
    last = tr.run(steps=2)
    assert tr.step == 2 and np.isfinite(last["loss"])
    log = [json.loads(x) for x in (Path(cfg.out) / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log if "loss" in r] == [1, 2]
    assert load_stage(Path(cfg.out) / "stage.safetensors").config.notes.startswith(f"trained 2 steps on {root}")


def _cli(*args, env_extra=None, **kw):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", **(env_extra or {})}
    return subprocess.run([sys.executable, "-m", "cascade", *args], cwd=ROOT, env=env, capture_output=True, text=True, **kw)


def _write_stage_json(tmp_path, role="base") -> str:
    p = tmp_path / f"{role}.json"
    p.write_text(
        json.dumps(
            stage_cfg(role)
            .replace(text_encoder="sentence-transformers/all-MiniLM-L6-v2", text_dim=384, unet=tiny_unet(text_dim=384))
            .to_dict()
        )
    )
    return str(p)


def test_sigkill_and_restart_continues_from_the_last_checkpoint(tmp_path):
    out = tmp_path / "run"
    args = [
        "train",
        "--stage",
        "base",
        "--config",
        _write_stage_json(tmp_path),
        "--out",
        str(out),
        "--steps",
        "400",
        "--batch",
        "1",
        "--checkpoint-every",
        "2",
        "--log-every",
        "1",
        "--frame-skip",
        "1",
    ]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "cascade", *args], cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    state = out / "state.safetensors"
    deadline = time.time() + 120
    while time.time() < deadline and _step(state) < 4:
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = _step(state)
    assert killed_at >= 4
    load_file(str(state))  # the state file is intact after SIGKILL (atomic writes)
    r = _cli(*[a if a != "400" else str(killed_at + 2) for a in args], timeout=300)
    assert r.returncode == 0, r.stderr
    assert f"from step {killed_at}" in r.stdout
    assert _step(state) == killed_at + 2


def _step(state: Path) -> int:
    from cascade.checkpoint import check_safetensors_file

    try:
        return int(check_safetensors_file(state)["__metadata__"]["step"])
    except Exception:
        return -1


def test_two_process_cpu_training_with_gloo(tmp_path):
    out = tmp_path / "ddp"
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_port",
        "29517",
        "-m",
        "cascade",
        "train",
        "--stage",
        "base",
        "--config",
        _write_stage_json(tmp_path),
        "--out",
        str(out),
        "--steps",
        "3",
        "--batch",
        "1",
        "--checkpoint-every",
        "0",
        "--log-every",
        "1",
        "--frame-skip",
        "1",
    ]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    r = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    logs = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [x["step"] for x in logs] == [1, 2, 3]
    assert load_stage(out / "stage.safetensors").config.role == "base"


@pytest.mark.parametrize("role", ["base", "ssr", "tsr"])
def test_sample_videos_are_written_at_intervals(tmp_path, monkeypatch, role):
    import cascade.pipeline as pipeline
    from cascade.run import DEFAULT_OPTIONS

    used = []
    for name in ("generate", "upsample"):
        real = getattr(pipeline, name)

        def spy(*a, _real=real, **kw):
            used.append(kw["options"])
            return _real(*a, **kw)

        monkeypatch.setattr(pipeline, name, spy)
    cfg = train_cfg(tmp_path, role, sample_every=2, checkpoint_every=0, sample_prompts=("a red circle moving right",))
    Trainer(cfg, encoder=TinyEncoder()).run(steps=2)
    gifs = sorted((Path(cfg.out) / "samples").glob("*.gif"))
    assert [g.name for g in gifs] == ["step_0000002.gif"]
    # the GIFs are sampled the way the demo cascade samples the stage (guidance, projection), at 16 steps
    (opts,) = used
    assert opts.steps == 16 and opts.seed == 0
    want = DEFAULT_OPTIONS[role]
    assert (opts.guidance, opts.consistency, opts.aug_level) == (want.guidance, want.consistency, want.aug_level)


def test_base_training_logs_the_text_binding_diagnostic(tmp_path):
    cfg = train_cfg(tmp_path, steps=2, checkpoint_every=0, binding_every=2)
    Trainer(cfg, encoder=TinyEncoder()).run()
    recs = [json.loads(line) for line in (tmp_path / "base" / "log.jsonl").read_text().splitlines()]
    band = next(r["binding"] for r in recs if "binding" in r)
    assert set(band) == {"colour", "shape", "direction", "speed"}
    assert all(np.isfinite(v["mean"]) and v["se"] >= 0 for v in band.values())
    with pytest.raises(ValueError, match="binding_every"):
        train_cfg(tmp_path, role="ssr", stage=stage_cfg("ssr"), binding_every=2)


def test_data_workers_give_the_same_run_as_batches_built_in_process(tmp_path):
    enc = TinyEncoder()
    here = Trainer(train_cfg(tmp_path / "a", checkpoint_every=0), encoder=enc)
    here.run(steps=4)
    ahead = Trainer(train_cfg(tmp_path / "b", checkpoint_every=0, data_workers=2), encoder=enc)
    ahead.run(steps=4)
    a = here.acc.unwrap_model(here.model).state_dict()
    b = ahead.acc.unwrap_model(ahead.model).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_time_limit_saves_and_stops_then_a_resumed_run_goes_on(tmp_path):
    enc = TinyEncoder()
    cfg = train_cfg(tmp_path, steps=50, checkpoint_every=0, log_every=100, time_limit=1e-9)
    last = Trainer(cfg, encoder=enc).run()
    assert last["step"] == 1  # the first step ran past the limit: logged, saved, stopped
    meta = json.loads(json.dumps(read_state_meta(tmp_path / "base" / "state.safetensors")))
    assert meta["step"] == "1" and (tmp_path / "base" / "stage.safetensors").exists()
    resumed = Trainer(replace(cfg, time_limit=0.0, steps=3), encoder=enc)
    assert resumed.step == 1
    assert resumed.run()["step"] == 3
    with pytest.raises(ValueError, match="time_limit"):
        train_cfg(tmp_path, time_limit=-1.0)


def read_state_meta(path):
    from cascade.checkpoint import check_safetensors_file

    return check_safetensors_file(path)["__metadata__"]
