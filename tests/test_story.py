import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import tiny_stage

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
    assert [s for _, s in a] == [0, 0, 1, 1, 1]  # 6 + 4 | 4 + 4 + 1 new frames
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
    opts = SamplingOptions(steps=3, guidance=2.0, seed=3, thresholding="none")  # dynamic thresholding is per chunk
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
