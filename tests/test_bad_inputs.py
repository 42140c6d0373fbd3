"""The bad-input catalogue: every case is refused with an error of the expected type whose message
names the fault, before any network evaluation (a call counter on every stage), and without
changing any file the user had. Library, CLI and node cases; the kill tests show that a streamed
video stays playable whatever happens to the process."""

from __future__ import annotations

import hashlib
import math
import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from helpers import tiny_stage
from test_story import enc

from cascade.checks import check_output_path
from cascade.guidance import GuidanceOptions
from cascade.pipeline import SamplingOptions, generate, upsample_spatial, upsample_temporal
from cascade.samplers import Sampler
from cascade.stage import load_stage
from cascade.story import Scene, parse_story, run_story
from cascade.video_io import VideoWriter, read_video

ROOT = Path(__file__).resolve().parent.parent
FAST = SamplingOptions(steps=2, guidance=1.0)


def counted(stage):
    """The stage with a counter of network evaluations (``stage.calls``)."""
    stage.calls = 0

    def hook(*_):
        stage.calls += 1

    stage.net.register_forward_pre_hook(hook)
    return stage


@pytest.fixture(scope="module")
def st():
    return {
        "base": counted(tiny_stage("base")),
        "cont": counted(tiny_stage("base", continuation=True)),
        "ssr": counted(tiny_stage("ssr")),
        "tsr": counted(tiny_stage("tsr")),
        "student": counted(tiny_stage("base", distilled=True)),
    }


def text(width=8):
    t = enc(["a red circle"])
    if width != 8:
        from cascade.text import TextEmbedding

        return TextEmbedding(torch.zeros(1, 3, width), torch.ones(1, 3, dtype=torch.bool), torch.zeros(1, width), "other")
    return t


LOW = torch.zeros(1, 3, 3, 8, 8)
NAN = LOW.clone().index_put_((torch.tensor([0]),) * 5, torch.tensor(float("nan")))

# (id, callable(st), exception type, message pattern)
LIBRARY = [
    ("frames=0", lambda s: generate(s["base"], text(), frames=0, options=FAST), ValueError, "frames must be a whole number"),
    ("frames<0", lambda s: generate(s["base"], text(), frames=-3, options=FAST), ValueError, "frames must be"),
    ("frames fraction", lambda s: generate(s["base"], text(), frames=2.5, options=FAST), ValueError, "frames must be"),
    ("width=0", lambda s: generate(s["base"], text(), width=0, options=FAST), ValueError, "width must be"),
    ("height=7", lambda s: generate(s["base"], text(), height=7, options=FAST), ValueError, "multiples of 2"),
    ("frames=10^6 memory", lambda s: generate(s["base"], text(), frames=10**6, options=FAST), MemoryError, "Lower frames"),
    ("steps=0", lambda s: SamplingOptions(steps=0), ValueError, "steps must be a positive integer"),
    ("steps bool", lambda s: SamplingOptions(steps=True), ValueError, "steps must be"),
    ("w<0", lambda s: SamplingOptions(guidance=-1), ValueError, "w must be >= 0"),
    ("w nan", lambda s: SamplingOptions(guidance=math.nan), ValueError, "w must be >= 0"),
    ("w_low<0", lambda s: GuidanceOptions(2.0, w_low=-1), ValueError, "low guidance weight"),
    ("denoise=0", lambda s: SamplingOptions(denoise=0), ValueError, "denoise must be in"),
    ("denoise>1", lambda s: SamplingOptions(denoise=1.5), ValueError, "denoise must be in"),
    ("aug>1", lambda s: SamplingOptions(aug_level=2), ValueError, "noise-augmentation level"),
    ("sampler unknown", lambda s: Sampler("euler_magic"), ValueError, "Unknown sampler 'euler_magic'"),
    ("sampler option", lambda s: Sampler("ddim", {"gamma": 0.3}), ValueError, "ddim sampler has no option gamma"),
    ("gamma>1", lambda s: Sampler("ancestral", {"gamma": 2.0}), ValueError, "gamma must be in"),
    ("thresholding", lambda s: GuidanceOptions(thresholding="soft"), ValueError, "thresholding must be one of"),
    ("percentile", lambda s: GuidanceOptions(percentile=0), ValueError, "percentile"),
    ("text width", lambda s: generate(s["base"], text(16), options=FAST), ValueError, "width 8, but the conditioning is 16"),
    (
        "known frames, no channels",
        lambda s: generate(s["base"], text(), options=FAST, known=torch.zeros(1, 3, 4, 8, 8), known_mask=torch.ones(1, 4)),
        ValueError,
        "no continuation channels",
    ),
    (
        "known frames shape",
        lambda s: generate(s["cont"], text(), options=FAST, known=torch.zeros(1, 3, 3, 8, 8), known_mask=torch.ones(1, 3)),
        ValueError,
        "Known frames must have shape",
    ),
    (
        "known mask missing",
        lambda s: generate(s["cont"], text(), options=FAST, known=torch.zeros(1, 3, 4, 8, 8)),
        ValueError,
        "known_mask",
    ),
    (
        "base denoise",
        lambda s: generate(s["base"], text(), options=SamplingOptions(steps=2, denoise=0.5)),
        ValueError,
        "option of SR stages",
    ),
    (
        "student steps",
        lambda s: generate(s["student"], text(), options=SamplingOptions(steps=8)),
        ValueError,
        "distilled for 4/2",
    ),
    (
        "student w",
        lambda s: generate(s["student"], text(), options=SamplingOptions(steps=4, guidance=9.0)),
        ValueError,
        r"w in \[0, 5\]",
    ),
    (
        "student negative",
        lambda s: generate(s["student"], text(), negative=text(), options=SamplingOptions(steps=4)),
        ValueError,
        "no negative prompt",
    ),
    ("SSR on a base", lambda s: upsample_spatial(s["base"], LOW, text(), options=FAST), ValueError, "needs a spatial super-res"),
    ("SSR NaN input", lambda s: upsample_spatial(s["ssr"], NAN, text(), options=FAST), ValueError, "NaN"),
    ("SSR scale 0", lambda s: upsample_spatial(s["ssr"], LOW, text(), scale=0, options=FAST), ValueError, "positive number"),
    ("SSR scale nan", lambda s: upsample_spatial(s["ssr"], LOW, text(), scale=math.nan, options=FAST), ValueError, "positive"),
    ("SSR too large", lambda s: upsample_spatial(s["ssr"], LOW, text(), scale=2000, options=FAST), ValueError, "too large"),
    ("TSR x3 on x2", lambda s: upsample_temporal(s["tsr"], LOW, text(), multiplier=3, options=FAST), ValueError, "power of 2"),
    (
        "TSR fraction",
        lambda s: upsample_temporal(s["tsr"], LOW, text(), multiplier=2.5, options=FAST),
        ValueError,
        "must be an integer",
    ),
    (
        "TSR one frame",
        lambda s: upsample_temporal(s["tsr"], LOW[:, :, :1], text(), mode="interpolate", options=FAST),
        ValueError,
        "at least 2 input frames",
    ),
    ("TSR mode", lambda s: upsample_temporal(s["tsr"], LOW, text(), mode="film", options=FAST), ValueError, "frame-count mode"),
    (
        "story student steps",
        lambda s: run_story(
            [Scene("a", 4)], base=s["student"], encode=enc, options={"base": SamplingOptions(steps=8)}, sink=lambda f, i: None
        ),
        ValueError,
        "distilled for 4/2",
    ),
    ("story empty", lambda s: parse_story("  ", fps=4), ValueError, "story is empty"),
    ("story | abc", lambda s: parse_story("a red circle | abc", fps=4), ValueError, r"line 1 .*'\| abc' is not a duration"),
    ("story 0s", lambda s: parse_story("a red circle | 0s", fps=4), ValueError, "more than 0"),
    ("story 2.5f", lambda s: parse_story("a red circle | 2.5f", fps=4), ValueError, "whole number"),
    ("story 0.1s at 4 fps", lambda s: parse_story("a red circle | 0.1s", fps=4), ValueError, "has no frames"),
    ("story keyframe order", lambda s: parse_story('"48": "a", "0": "b"', fps=4), ValueError, "list keyframes in order"),
    ("story default 0 s", lambda s: parse_story("a red circle", fps=4, default_seconds=0), ValueError, "default scene duration"),
    ("story fps 0", lambda s: parse_story("a red circle", fps=0), ValueError, "fps must be a positive"),
    ("encoder empty prompt", lambda s: _encoder().encode(["  "]), ValueError, "Empty prompt"),
]


def _encoder():
    from cascade.text import load_text_encoder

    return load_text_encoder()


@pytest.mark.parametrize("case,fn,exc,match", LIBRARY, ids=[c[0] for c in LIBRARY])
def test_library_refuses_bad_input_before_any_work(st, case, fn, exc, match):
    before = {k: s.calls for k, s in st.items()}
    with pytest.raises(exc, match=match):
        fn(st)
    assert {k: s.calls for k, s in st.items()} == before, "a network ran before the input was refused"


# --- files ---------------------------------------------------------------------------------------


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_stage_file_cases_name_the_file(tmp_path):
    folder = tmp_path / "model.safetensors"
    folder.mkdir()
    with pytest.raises(IsADirectoryError, match="is a folder"):
        load_stage(folder)
    with pytest.raises(FileNotFoundError, match="not found"):
        load_stage(tmp_path / "missing.safetensors")
    (tmp_path / "evil.pt").write_bytes(pickle.dumps({"a": 1}))
    with pytest.raises(ValueError, match="pickle"):
        load_stage(tmp_path / "evil.pt")
    tiny_stage("tsr").save(tmp_path / "tsr.safetensors")
    data = (tmp_path / "tsr.safetensors").read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="truncated"):
        load_stage(tmp_path / "cut.safetensors")
    with pytest.raises(ValueError, match="TSR x2"):
        load_stage(tmp_path / "tsr.safetensors", role="base")


@pytest.mark.parametrize(
    "name,setup,exc,match",
    [
        ("folder", lambda d: (d / "out.mp4").mkdir(), IsADirectoryError, "is a folder"),
        ("extension", lambda d: None, ValueError, "Unsupported output format '.xyz'"),
        ("no extension", lambda d: None, ValueError, "no extension"),
        ("read-only folder", lambda d: (d / "ro").mkdir(mode=0o555), PermissionError, "not writable"),
        ("under a file", lambda d: (d / "file").write_text("x"), NotADirectoryError, "is a file, not a folder"),
    ],
)
def test_output_paths_are_checked_before_anything_is_written(tmp_path, name, setup, exc, match):
    if name == "read-only folder" and os.geteuid() == 0:
        pytest.skip("root may write into read-only folders")
    setup(tmp_path)
    target = {
        "folder": tmp_path / "out.mp4",
        "extension": tmp_path / "out.xyz",
        "no extension": tmp_path / "out",
        "read-only folder": tmp_path / "ro" / "out.mp4",
        "under a file": tmp_path / "file" / "out.mp4",
    }[name]
    listing = sorted(p.name for p in tmp_path.rglob("*"))
    with pytest.raises(exc, match=match):
        VideoWriter(target, 8)
    assert sorted(p.name for p in tmp_path.rglob("*")) == listing  # nothing created


def test_a_full_disk_is_refused_before_writing(tmp_path):
    with pytest.raises(OSError, match="Not enough disk space"):
        check_output_path(tmp_path / "out.mp4", need_bytes=1 << 62)


def test_a_failed_run_never_replaces_an_existing_file(tmp_path):
    path = tmp_path / "story.mp4"
    path.write_bytes(b"the user's earlier video")
    with pytest.raises(RuntimeError), VideoWriter(path, 4) as w:
        w.write(torch.rand(3, 16, 16, 3))
        raise RuntimeError("cancelled")
    assert path.read_bytes() == b"the user's earlier video"
    kept = tmp_path / "story.partial.mp4"
    assert w.kept == kept and read_video(kept)[0].shape[0] == 3  # the frames made so far, playable
    fresh = tmp_path / "new.mp4"
    with pytest.raises(RuntimeError), VideoWriter(fresh, 4) as w:
        w.write(torch.rand(2, 16, 16, 3))
        raise RuntimeError("cancelled")
    assert read_video(fresh)[0].shape[0] == 2  # nothing was there: the partial video takes the name
    with VideoWriter(path, 4) as w:  # a finished run replaces it
        w.write(torch.rand(2, 16, 16, 3))
    assert read_video(path)[0].shape[0] == 2 and not list(tmp_path.glob("story.partial2*"))


def test_training_config_cases():
    from test_train import stage_cfg

    from cascade.distill import DistillConfig
    from cascade.train import TrainConfig

    cases = [
        (lambda: TrainConfig(stage=stage_cfg("base"), batch=0), "batch must be >= 1"),
        (lambda: TrainConfig(stage=stage_cfg("base"), lr_decay="step"), "lr_decay must be"),
        (lambda: TrainConfig(stage=stage_cfg("base"), crop=8), "crop is for SR stages"),
        (lambda: TrainConfig(stage=stage_cfg("tsr"), image_fraction=0.25), "cannot learn from still images"),
        (lambda: TrainConfig(stage=stage_cfg("base"), frame_skip=0), "frame_skip must be >= 1"),
        (lambda: DistillConfig(teacher="t.safetensors", teacher_steps=48, target_steps=8), "power of two"),
        (lambda: DistillConfig(teacher="t.safetensors", w_min=4, w_max=1), "w_min <= w_max"),
        (lambda: DistillConfig(teacher=""), "needs the teacher"),
    ]
    for fn, match in cases:
        with pytest.raises(ValueError, match=match):
            fn()


def test_cascade_checks_every_stage_before_the_base_runs(st):
    """An SR stage trained with another text encoder is refused before the base samples."""
    from cascade.run import DEFAULT_OPTIONS, Cascade

    class Enc:
        width, encoder_id = 8, "test-encoder"

        def encode(self, prompts):
            return enc(prompts)

    from helpers import tiny_unet

    from cascade.config import StageConfig
    from cascade.stage import Stage

    wide = Stage(
        StageConfig(
            role="ssr",
            unet=tiny_unet(cond_channels=3, aug_cond=True, text_dim=16),
            spatial_factor=2.0,
            text_dim=16,
            height=8,
            width=8,
            name="wide-ssr",
        )
    )
    before = st["base"].calls
    with pytest.raises(ValueError, match="wide-ssr.*width 16"):
        Cascade(Enc(), st["base"], ssr=wide, options=dict(DEFAULT_OPTIONS))("a red circle")
    assert st["base"].calls == before


# --- the command line ----------------------------------------------------------------------------


def cli(*args, cwd=ROOT, timeout=300):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    t0 = time.time()
    r = subprocess.run(
        [sys.executable, "-m", "cascade", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )
    return r, time.time() - t0


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    (d / "existing.mp4").write_bytes(b"keep me")
    (d / "binary.txt").write_bytes(b"\xff\xfe\x00 not text")
    (d / "pickled.pt").write_bytes(pickle.dumps(torch.nn.Linear(2, 2)))
    (d / "stage.json").write_text(tiny_stage("tsr").config.to_json())
    (d / "empty.json").write_text("{}")
    (d / "folder.safetensors").mkdir()
    return d


CLI = [
    ("generate -o folder", lambda d: ["generate", "a red circle", "-o", str(d)], "is a folder"),
    ("generate .xyz", lambda d: ["generate", "a red circle", "-o", str(d / "x.xyz")], "Unsupported output format"),
    ("generate --steps 0", lambda d: ["generate", "a red circle", "--steps", "0", "-o", str(d / "a.mp4")], "--steps must be"),
    ("generate --sr-steps -1", lambda d: ["generate", "a", "--sr-steps", "-1", "-o", str(d / "a.mp4")], "--sr-steps must"),
    ("generate empty prompt", lambda d: ["generate", "  ", "-o", str(d / "a.mp4")], "prompt is empty"),
    ("generate under a file", lambda d: ["generate", "a", "-o", str(d / "existing.mp4" / "x.mp4")], "is a file, not a folder"),
    ("story missing file", lambda d: ["story", str(d / "nope.txt"), "-o", str(d / "s.mp4")], "No story file"),
    ("story binary file", lambda d: ["story", str(d / "binary.txt"), "-o", str(d / "s.mp4")], "not a UTF-8 text file"),
    ("story --seconds 0", lambda d: ["story", "a red circle", "--seconds", "0", "-o", str(d / "s.mp4")], "--seconds"),
    ("story | abc", lambda d: ["story", "a red circle | abc", "-o", str(d / "s.mp4"), "--base-only"], "is not a duration"),
    ("story .xyz", lambda d: ["story", "a red circle", "-o", str(d / "s.xyz")], "Unsupported output format"),
    (
        "convert a pickle",
        lambda d: ["convert", str(d / "pickled.pt"), str(d / "o.safetensors"), "--config", str(d / "stage.json")],
        "",
    ),
    (
        "convert, bad config",
        lambda d: ["convert", str(d / "pickled.pt"), str(d / "o.safetensors"), "--config", str(d / "empty.json")],
        "lacks role, unet",
    ),
    ("generate --device gpu0", lambda d: ["generate", "a", "--device", "gpu0", "-o", str(d / "a.mp4")], "Unknown device"),
    ("story --device tpu", lambda d: ["story", "a red circle", "--device", "tpu", "-o", str(d / "s.mp4")], "Unknown device"),
    ("evaluate --device gpu0", lambda d: ["evaluate", "--device", "gpu0", "--out", str(d / "ev")], "Unknown device"),
    *(
        []  # a machine with a GPU has cuda; the refusal of a missing one is checked where there is none
        if torch.cuda.is_available()
        else [("generate --device cuda", lambda d: ["generate", "a", "--device", "cuda", "-o", str(d / "a.mp4")], "no CUDA GPU")]
    ),
    ("info on a folder", lambda d: ["info", str(d / "folder.safetensors")], "is a folder"),
    ("info missing", lambda d: ["info", str(d / "none.safetensors")], "not found"),
]


@pytest.mark.parametrize("case,argv,match", CLI, ids=[c[0] for c in CLI])
def test_cli_prints_one_line_and_exits_2(workdir, case, argv, match):
    before = {p.name: digest(p) for p in workdir.iterdir() if p.is_file()}
    r, seconds = cli(*argv(workdir))
    assert r.returncode == 2, (r.returncode, r.stderr[-1500:])
    lines = [x for x in r.stderr.strip().splitlines() if x.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr  # one line, no traceback
    if case == "convert a pickle":
        assert "unpickling" in lines[0] and "weights_only" not in lines[0]
    else:
        assert match in lines[0]
    assert seconds < 60  # refused before any model ran (loading alone is seconds)
    assert {p.name: digest(p) for p in workdir.iterdir() if p.is_file()} == before  # no user file changed


def test_cli_debug_shows_the_traceback(workdir):
    r, _ = cli("--debug", "generate", "a red circle", "-o", str(workdir / "x.xyz"))
    assert r.returncode != 0 and "Traceback" in r.stderr and "Unsupported output format" in r.stderr


# --- kills ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM, signal.SIGINT])
def test_a_story_killed_at_any_moment_stays_playable_and_keeps_the_old_file(tmp_path, sig):
    """A long story is stopped mid-run: the existing file of that name is untouched and every frame
    written so far plays (SIGKILL: from the fragmented partial file; Ctrl-C: kept and reported)."""
    out = tmp_path / "story.mp4"
    out.write_bytes(b"the user's earlier video")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "cascade", "story", "a red circle moving right | 60s", "-o", str(out), "--fast", "--base-only"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    partial = tmp_path / "story.partial.mp4"
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if partial.exists() and partial.stat().st_size > 6000:  # a few windows written
            break
        time.sleep(0.2)
    assert proc.poll() is None, proc.communicate()[1][-2000:]
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    assert out.read_bytes() == b"the user's earlier video"
    frames, _ = read_video(partial)
    assert frames.shape[0] >= 12, frames.shape  # every finished window plays
    if sig == signal.SIGINT:
        assert proc.returncode == 130 and "interrupted" in err and "Traceback" not in err


# --- the nodes (executed directly, as ComfyUI would) ------------------------------------------------

from test_nodes import M, cond, models  # noqa: E402,F401 (fixtures)


def _base(m, c, **kw):
    model = kw.pop("model", None) or m["base"]
    args = dict(frames=4, width=8, height=8, fps=4.0, seed=1, steps=2, guidance=4.0, sampler_name="ddim")
    args.update(kw)
    return M["ImagenVideoSampler"]().sample(model, c, **args)


IMAGES = torch.rand(3, 8, 8, 3)
NODES = [
    ("sampler frames=0", lambda m, c: _base(m, c, frames=0), ValueError, "frames must be a whole number"),
    ("sampler width=0", lambda m, c: _base(m, c, width=0), ValueError, "width must be a whole number"),
    ("sampler fps=0", lambda m, c: _base(m, c, fps=0.0), ValueError, "fps must be a positive number"),
    ("sampler huge", lambda m, c: _base(m, c, frames=10**6), MemoryError, "Lower frames"),
    ("sampler on an SSR", lambda m, c: _base(m, c, model=m["ssr"]), ValueError, "needs a base"),
    (
        "SSR scale 0.5",
        lambda m, c: M["ImagenVideoSpatialSR"]().upscale(m["ssr"], IMAGES, c, 0.5, 0.3, 0, 2, 0.0),
        ValueError,
        "scale must be >= 1",
    ),
    (
        "SSR NaN images",
        lambda m, c: M["ImagenVideoSpatialSR"]().upscale(m["ssr"], IMAGES * math.nan, c, 2.0, 0.3, 0, 2, 0.0),
        ValueError,
        "NaN",
    ),
    (
        "TSR fps 0",
        lambda m, c: M["ImagenVideoTemporalSR"]().interpolate(m["tsr"], IMAGES, 0.0, c, 2, "imagen", 0.3, 0, 2, 0.0),
        ValueError,
        "fps must be",
    ),
    (
        "TSR x3",
        lambda m, c: M["ImagenVideoTemporalSR"]().interpolate(m["tsr"], IMAGES, 8.0, c, 3, "imagen", 0.3, 0, 2, 0.0),
        ValueError,
        "power of 2",
    ),
    (
        "student steps",
        lambda m, c: M["ImagenVideoDistilledSampler"]().sample(m["base_distilled"], c, 0, 8, 4.0, "distilled_stochastic"),
        ValueError,
        "distilled for 4/2",
    ),
    (
        "story | abc",
        lambda m, c: M["ImagenVideoStory"]().generate(
            m["base"], _encoder_node(), "a red circle | abc", 4.0, 4.0, 0, 2, 4.0, "ddim", 2, "cut", 4
        ),
        ValueError,
        "is not a duration",
    ),
    (
        "story keyframes out of order",
        lambda m, c: M["ImagenVideoStory"]().generate(
            m["base"], _encoder_node(), '"8": "a", "0": "b"', 4.0, 4.0, 0, 2, 4.0, "ddim", 2, "cut", 4
        ),
        ValueError,
        "in order",
    ),
]


def _encoder_node():
    return M["ImagenVideoTextEncoderLoader"]().load("all-MiniLM-L6-v2 (embedded)")[0]


@pytest.mark.parametrize("case,fn,exc,match", NODES, ids=[c[0] for c in NODES])
def test_nodes_refuse_bad_input_before_any_work(models, cond, case, fn, exc, match):  # noqa: F811
    calls = []
    hooks = [m.stage.net.register_forward_pre_hook(lambda *a: calls.append(1)) for m in models.values()]
    try:
        with pytest.raises(exc, match=match):
            fn(models, cond)
    finally:
        for h in hooks:
            h.remove()
    assert not calls, "a network ran before the input was refused"


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")  # the dropped exception, on purpose
def test_ctrl_c_is_sticky_even_when_python_drops_the_exception():
    """A KeyboardInterrupt raised inside a finalizer is printed and dropped by Python; the CLI's
    handler also sets a flag, so the next window (or the file's finish) stops the run anyway and an
    existing output file is never replaced after Ctrl-C."""
    import signal

    from cascade import cli

    previous = cli._install_stop_handler()
    try:

        class Finalized:
            def __del__(self):
                os.kill(os.getpid(), signal.SIGINT)  # the handler raises here, inside __del__: dropped

        Finalized()  # collected at once; Python prints "Exception ignored in ..." and goes on
        time.sleep(0.05)
        with pytest.raises(KeyboardInterrupt):
            cli.check_stop()
    finally:
        signal.signal(signal.SIGINT, previous)
        cli._STOP["requested"] = False
