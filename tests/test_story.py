import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import tiny_stage

from cascade.guidance import GuidanceOptions
from cascade.pipeline import SamplingOptions, upsample_spatial
from cascade.story import Scene, StoryOptions, StreamingSR, parse_story, plan_windows, run_story, story_base_frames
from cascade.text import TextEmbedding

ROOT = Path(__file__).resolve().parent.parent
MOTORCYCLE = ROOT / "stories" / "motorcycle.txt"


def test_one_prompt_per_line_with_optional_durations():
    story = """a red circle moving right quickly | 4s
    2.5 s: a blue square moving up slowly
    a yellow triangle moving left (12 frames)
    # a comment line is ignored
    a white circle moving down | 3
    a green square moving right"""
    scenes = parse_story(story, fps=4)
    assert [s.frames for s in scenes] == [16, 10, 12, 12, 16]
    assert scenes[1].prompt == "a blue square moving up slowly" and scenes[2].prompt == "a yellow triangle moving left"
    assert [s.line for s in scenes] == [1, 2, 3, 5, 6]


def test_keyframes_as_prompt_schedule_packs_write_them():
    for text in ('"0": "a red circle moving right",\n"48": "a blue square moving up",', '{"0": "a", "12": "b", "20": "c"}'):
        scenes = parse_story(text, fps=4, default_seconds=4)
        assert scenes[0].frames == (48 if "48" in text else 12)
        assert scenes[-1].frames == 16  # the last keyframe lasts the default duration
    later = parse_story('"8": "a", "20": "b"', fps=4)
    assert later[0].frames == 20  # frames before the first keyframe use its prompt


def test_a_paragraph_is_one_scene_per_sentence():
    text = MOTORCYCLE.read_text()
    scenes = parse_story(text, fps=4)
    assert len(scenes) == 19
    assert all(s.prompt and not s.prompt.endswith(".") for s in scenes)
    two = parse_story("A red circle moves right. Then the red circle moves up!", fps=4)
    assert [s.prompt for s in two] == ["A red circle moves right", "Then the red circle moves up"]


@pytest.mark.parametrize(
    "text,match",
    [
        ("", "story is empty"),
        ("   \n  ", "story is empty"),
        ("a red circle | 0s", r"line 1 .* more than 0"),
        ("a red circle | 4s\na blue square | 0f", r"line 2 .* more than 0"),
        ('"0": "a red circle",\n"48" "a blue square"', r"cannot parse line 2"),
        ('"0": "a", "0": "b"', "both start at frame 0"),
        ('"0": "a", "x2": "b"', "not a frame number"),
        ("a red circle | 3000s", "beyond the maximum"),
    ],
)
def test_bad_stories_name_the_line(text, match):
    with pytest.raises(ValueError, match=match):
        parse_story(text, fps=4)


def test_window_plan_covers_the_story_and_cuts_at_scene_changes():
    scenes = [Scene("a", 30), Scene("b", 7), Scene("c", 40)]
    plan = plan_windows(scenes, window=16, context=4)
    assert sum(w.new for w in plan) == 77
    assert plan[0].context == 0 and plan[0].new == 16 and all(w.context == 4 for w in plan[1:])
    starts = [w.start for w in plan]
    assert starts == sorted(starts) and all(b.start == a.start + a.new for a, b in zip(plan, plan[1:]))
    assert [w.prev_scene for w in plan if w.prev_scene is not None] == [0, 1]
    for w in plan:  # each window's new frames belong to one scene
        assert w.start >= sum(s.frames for s in scenes[: w.scene]) and w.start + w.new <= sum(
            s.frames for s in scenes[: w.scene + 1]
        )
    long = plan_windows([Scene("a", 1200)], 16, 4)
    assert len(long) == 1 + (1200 - 16 + 11) // 12  # linear in length


def test_a_scene_change_can_continue_from_fewer_frames(monkeypatch):
    """change_context: the first window of each new scene is conditioned on that many finished frames
    (the others on context), so the new prompt is free to change the object's shape and motion."""
    import cascade.story as story_mod

    scenes = [Scene("a", 30), Scene("b", 20), Scene("c", 9)]
    plan = plan_windows(scenes, window=16, context=4, change_context=1)
    assert sum(w.new for w in plan) == 59
    assert [(w.context, w.prev_scene) for w in plan if w.prev_scene is not None] == [(1, 0), (1, 1)]
    assert all(w.context == 4 for w in plan[1:] if w.prev_scene is None)
    assert [w.context for w in plan_windows(scenes, 16, 4, None)] == [w.context for w in plan_windows(scenes, 16, 4)]
    assert all(w.context in (0, 4) for w in plan_windows(scenes, 16, 4, 0)[1:] if w.prev_scene is not None)
    for bad in (-1, 16):
        with pytest.raises(ValueError, match="change_context"):
            plan_windows(scenes, 16, 4, bad)
        with pytest.raises(ValueError, match="change_context"):
            StoryOptions(change_context=bad)

    calls = []
    real = story_mod.generate
    monkeypatch.setattr(story_mod, "generate", lambda stage, text, **kw: calls.append(kw) or real(stage, text, **kw))
    base = tiny_stage("base", continuation=True)
    small = [Scene("a", 8), Scene("b", 6)]
    story = StoryOptions(window=6, context=2, change_context=1)
    out = list(story_base_frames(base, small, enc, options=FAST, story=story))
    known = [int(c["known_mask"][0].sum()) for c in calls]
    assert known == [w.context for w in plan_windows(small, 6, 2, 1)] == [0, 2, 1, 2]
    assert sum(f.shape[2] for f, _ in out) == 14
    assert StoryOptions().change_context == 1  # the library's (and the command line's) default
    old = list(story_base_frames(base, small, enc, options=FAST, story=StoryOptions(window=6, context=2, change_context=None)))
    assert torch.equal(out[0][0], old[0][0]) and not torch.equal(out[2][0], old[2][0])  # only the new scene differs
    # more change frames than context: the story keeps enough finished frames for them
    calls.clear()
    list(story_base_frames(base, small, enc, options=FAST, story=StoryOptions(window=6, context=1, change_context=3)))
    assert [int(c["known_mask"][0].sum()) for c in calls] == [w.context for w in plan_windows(small, 6, 1, 3)] == [0, 1, 3, 1]


def test_scenes_shorter_than_the_context_use_only_the_frames_made_so_far():
    """A paragraph at 0.5 s per scene gives 2-frame scenes; the second window can only continue from 2 frames."""
    base = tiny_stage("base", continuation=True)
    scenes = [Scene("a", 2), Scene("b", 2), Scene("c", 2)]
    plan = plan_windows(scenes, window=6, context=4)
    assert [w.context for w in plan] == [0, 2, 4] and [w.new for w in plan] == [2, 2, 2]
    out = list(story_base_frames(base, scenes, enc, options=FAST, story=StoryOptions(window=6, context=4)))
    assert [f.shape[2] for f, _ in out] == [2, 2, 2] and [s for _, s in out] == [0, 1, 2]


def enc(prompts):
    g = torch.Generator().manual_seed(sum(map(ord, prompts[0])))
    t = torch.randn(1, 3, 8, generator=g)
    return TextEmbedding(t, torch.ones(1, 3, dtype=torch.bool), t.mean(1), "test-encoder")


FAST = SamplingOptions(steps=3, guidance=2.0, seed=3)


@pytest.mark.parametrize("transition", ["cut", "blend"])
def test_story_base_frames_are_deterministic_and_complete(transition):
    base = tiny_stage("base", continuation=True)
    scenes = [Scene("a red circle", 10), Scene("a blue square", 9)]
    opts = StoryOptions(window=6, context=2, transition=transition, transition_frames=2)
    a = list(story_base_frames(base, scenes, enc, options=FAST, story=opts))
    b = list(story_base_frames(base, scenes, enc, options=FAST, story=opts))
    assert sum(f.shape[2] for f, _ in a) == 19
    assert [s for _, s in a] == [0, 0, 1, 1]  # 6 + 4 | 5 + 4 new frames (a new scene continues from 1 frame)
    assert all(torch.equal(x, y) for (x, _), (y, _) in zip(a, b))


def test_continuation_is_used_and_replacement_fallback_warns(caplog):
    plain = tiny_stage("base")  # no known-frame channels
    scenes = [Scene("a", 8)]
    with caplog.at_level(logging.WARNING):
        out = list(story_base_frames(plain, scenes, enc, options=FAST, story=StoryOptions(window=6, context=2)))
    assert sum(f.shape[2] for f, _ in out) == 8
    assert "replacement method" in caplog.text


def test_streaming_sr_matches_one_pass_for_a_frame_local_model():
    """Seam fusion: with a per-frame SSR the chunked stream equals one pass over the whole video
    (shared per-frame noise, identical overlaps crossfaded)."""
    ssr = tiny_stage("ssr")
    for m in ssr.net.modules():
        if type(m).__name__ == "TemporalConv":
            torch.nn.init.zeros_(m.conv.weight)
            torch.nn.init.zeros_(m.conv.bias)
    video = torch.rand(1, 3, 23, 4, 4) * 2 - 1
    text = enc(["x"])
    opts = SamplingOptions(
        steps=3, guidance=GuidanceOptions(2.0, thresholding="none"), seed=3
    )  # dynamic thresholding is per chunk
    full = upsample_spatial(ssr, video, text, options=opts, window=0)
    stream = StreamingSR(ssr, lambda i: text, opts, chunk=8, overlap=3)
    outs = []
    for i in range(0, 23, 5):  # frames arrive in pieces of 5
        outs += list(stream.push(video[:, :, i : i + 5]))
    outs += list(stream.flush())
    streamed = torch.cat(outs, dim=2)
    assert streamed.shape == full.shape
    assert torch.allclose(streamed, full, atol=1e-5)


def test_run_story_through_the_cascade_streams_frames():
    base, tsr, ssr = tiny_stage("base", continuation=True), tiny_stage("tsr"), tiny_stage("ssr")
    got = []
    scenes = [Scene("a red circle", 9), Scene("a blue square", 7)]
    opts = {"base": FAST, "tsr": FAST, "ssr": FAST}
    r = run_story(
        scenes,
        base=base,
        encode=enc,
        tsr=tsr,
        ssr=ssr,
        options=opts,
        story=StoryOptions(window=6, context=2),
        sink=lambda f, s: got.append((f.shape, s)),
        sr_chunk=4,
        sr_overlap=1,
    )
    assert sum(s[0][2] for s in got) == 32 == r["frames"]  # 16 base frames x2 (TSR)
    assert all(s[0][-2:] == (16, 16) for s in got)  # x2 (SSR)
    assert {s for _, s in got} == {0, 1}
    assert len(r["seconds_per_scene"]) == 2


def test_interrupted_story_keeps_a_playable_file(tmp_path):
    from cascade.video_io import VideoWriter, read_video

    base = tiny_stage("base", continuation=True)
    path = tmp_path / "story.mp4"

    class Stop(Exception):
        pass

    def progress(stage, window, total):
        if window >= 2:
            raise Stop

    with pytest.raises(Stop), VideoWriter(path, fps=4) as w:
        run_story(
            [Scene("a", 40)],
            base=base,
            encode=enc,
            options={"base": FAST},
            story=StoryOptions(window=6, context=2),
            sink=lambda f, s: w.write(((f[0].permute(1, 2, 3, 0) + 1) / 2).clamp(0, 1)),
            progress=progress,
        )
    frames, _ = read_video(path)
    assert frames.shape[0] == 6 + 4  # the two finished windows


def test_memory_does_not_grow_with_story_length(tmp_path):
    """Peak memory of a 6x longer story (tiny model, frames discarded by the sink) stays the same."""
    script = tmp_path / "mem.py"
    script.write_text(
        "import resource, sys, json, torch\n"
        f"sys.path[:0] = [{str(ROOT)!r}, {str(ROOT / 'tests')!r}]\n"
        "from helpers import tiny_stage\n"
        "from test_story import enc\n"
        "from cascade.story import Scene, StoryOptions, run_story\n"
        "from cascade.pipeline import SamplingOptions\n"
        "torch.set_num_threads(1)\n"
        "n = int(sys.argv[1])\n"
        "o = SamplingOptions(steps=2, guidance=1.0)\n"
        "st = {'base': tiny_stage('base', continuation=True), 'tsr': tiny_stage('tsr'), 'ssr': tiny_stage('ssr')}\n"
        "run_story([Scene('a', 8)], base=st['base'], encode=enc, tsr=st['tsr'], ssr=st['ssr'], options={'base': o, 'tsr': o, 'ssr': o},\n"
        "          story=StoryOptions(window=8, context=2), sink=lambda f, s: None)\n"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "scenes = [Scene('scene %d' % i, 24) for i in range(n)]\n"
        "r = run_story(scenes, base=st['base'], encode=enc, tsr=st['tsr'], ssr=st['ssr'], options={'base': o, 'tsr': o, 'ssr': o},\n"
        "              story=StoryOptions(window=8, context=2), sink=lambda f, s: None)\n"
        "print(json.dumps({'peak_kb': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, 'before_kb': before, 'frames': r['frames']}))\n"
    )
    res = {}
    for n in (2, 12):
        out = subprocess.run([sys.executable, str(script), str(n)], capture_output=True, text=True, timeout=600, cwd=ROOT)
        assert out.returncode == 0, out.stderr[-2000:]
        res[n] = json.loads(out.stdout.strip().splitlines()[-1])
    assert res[12]["frames"] == 6 * res[2]["frames"]
    growth_long = res[12]["peak_kb"] - res[12]["before_kb"]
    growth_short = res[2]["peak_kb"] - res[2]["before_kb"]
    assert growth_long <= growth_short + 8 * 1024, res  # no growth beyond allocator noise (8 MiB)


def test_story_windows_sample_through_generate_with_every_option(monkeypatch):
    """Each window is one generate() call with the story's options (oscillating guidance reaches
    it), its known frames and an absolute frame offset, so the story seed alone decides the story."""
    import cascade.story as story_mod

    calls = []
    real = story_mod.generate

    def spy(stage, text, **kw):
        calls.append(kw)
        return real(stage, text, **kw)

    monkeypatch.setattr(story_mod, "generate", spy)
    base = tiny_stage("base", continuation=True)
    guide = GuidanceOptions(3.0, oscillate=True, w_low=0.0, const_steps=1)
    opts = SamplingOptions(steps=4, sampler="ancestral", guidance=guide, seed=5)
    scenes = [Scene("a", 10), Scene("b", 6)]
    plan = plan_windows(scenes, window=6, context=2, change_context=StoryOptions().change_context)
    batches = []
    hook = base.net.register_forward_pre_hook(lambda mod, args: batches.append(args[0].shape[0]))
    out = list(story_base_frames(base, scenes, enc, options=opts, story=StoryOptions(window=6, context=2, context_noise=0.1)))
    hook.remove()
    assert len(calls) == len(plan) and [c["frame_offset"] for c in calls] == [w.start - w.context for w in plan]
    assert all(c["options"].guidance == guide and c["options"].sampler.name == "ancestral" for c in calls)
    assert all(c["options"].seed == 5 and c["options"].aug_level == 0.1 for c in calls)
    assert batches == [2, 1, 2, 1] * len(plan)  # the oscillation happens inside every window
    again = list(story_base_frames(base, scenes, enc, options=opts, story=StoryOptions(window=6, context=2, context_noise=0.1)))
    assert all(torch.equal(a, b) for (a, _), (b, _) in zip(out, again))
    other = list(
        story_base_frames(
            base, scenes, enc, options=opts.for_stage(6, "base"), story=StoryOptions(window=6, context=2, context_noise=0.1)
        )
    )
    assert not torch.equal(out[0][0], other[0][0])


def test_blended_scene_change_uses_both_prompts_per_frame():
    from cascade.guidance import FramePrompts

    base = tiny_stage("base", continuation=True)
    scenes = [Scene("a", 6), Scene("b", 6)]
    cut = list(story_base_frames(base, scenes, enc, options=FAST, story=StoryOptions(window=6, context=2)))
    blend = list(
        story_base_frames(
            base, scenes, enc, options=FAST, story=StoryOptions(window=6, context=2, transition="blend", transition_frames=8)
        )
    )
    assert torch.equal(cut[0][0], blend[0][0])  # the first scene is the same
    assert not torch.equal(cut[1][0], blend[1][0])  # the change window blends the two prompts
    with pytest.raises(ValueError, match="sum to 1"):
        FramePrompts((enc(["a"]), enc(["b"])), torch.full((2, 6), 0.7))


def test_story_refuses_bad_options_before_any_work():
    base = tiny_stage("base", continuation=True)
    calls = []
    base.net.register_forward_pre_hook(lambda *a: calls.append(1))
    with pytest.raises(ValueError, match="option of SR stages"):
        next(story_base_frames(base, [Scene("a", 6)], enc, options=SamplingOptions(steps=2, denoise=0.5)))
    student = tiny_stage("base", distilled=True, continuation=True)
    with pytest.raises(ValueError, match="distilled for 4/2 steps"):
        run_story([Scene("a", 6)], base=student, encode=enc, options={"base": FAST}, sink=lambda f, s: None)
    assert not calls


def test_story_cli_seed_gives_the_same_video_byte_for_byte(tmp_path):
    """`python -m cascade story --seed`: the same seed and story give the same file; another seed another."""
    outs = {}
    for name, seed in (("a", 3), ("b", 3), ("c", 4)):
        path = tmp_path / f"{name}.mp4"
        r = subprocess.run(
            [sys.executable, "-m", "cascade", "story", "a red circle moving right | 2s", "-o", str(path)]
            + ["--fast", "--base-only", "--seed", str(seed)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=600,
            env={**__import__("os").environ, "OMP_NUM_THREADS": "1"},
        )
        assert r.returncode == 0, r.stderr[-2000:]
        outs[name] = path.read_bytes()
    assert outs["a"] == outs["b"] and outs["a"] != outs["c"]
