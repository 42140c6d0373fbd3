"""Every node executed directly (no ComfyUI installed), the node-schema contract, example workflows."""

import json
from pathlib import Path

import pytest
import torch
from packimport import ROOT, load_pack
from test_distill_eval import minilm_stage
from workflows import DATA, pack_schema, ui_to_api, validate_workflow

pack = load_pack()
M = pack.NODE_CLASS_MAPPINGS
adapter = pack.nodes.adapter


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """Tiny random stages (MiniLM-conditioned) in a models folder the loader lists."""
    from imagen_video_pack.cascade.config import DistillationInfo
    from imagen_video_pack.cascade.distill import guided_student_from
    from imagen_video_pack.cascade.stage import Stage

    root = tmp_path_factory.mktemp("models")
    (root / "imagen_video").mkdir()
    for role in ("base", "tsr", "ssr"):
        st = minilm_stage(role)
        st.save(root / "imagen_video" / f"{role}.safetensors")
        g = guided_student_from(st)
        Stage(g.config.replace(distillation=DistillationInfo(steps=(4, 2), w_max=8.0)), g.net).save(
            root / "imagen_video" / f"{role}_distilled.safetensors"
        )
    old = adapter.PACK_MODELS
    adapter.PACK_MODELS = root
    yield {
        name: M["ImagenVideoModelLoader"]().load(f"{name}.safetensors")[0]
        for name in ("base", "tsr", "ssr", "base_distilled", "tsr_distilled", "ssr_distilled")
    }
    adapter.PACK_MODELS = old


@pytest.fixture(scope="module")
def cond():
    enc = M["ImagenVideoTextEncoderLoader"]().load("all-MiniLM-L6-v2 (embedded)")[0]
    return M["ImagenVideoTextEncode"]().encode(enc, "a red circle moving right quickly")[0]


def run_base(models, cond, **kw):
    model = kw.pop("model", None) or models["base"]
    args = dict(frames=4, width=8, height=8, fps=4.0, seed=1, steps=2, guidance=4.0, sampler_name="ddim")
    args.update(kw)
    return M["ImagenVideoSampler"]().sample(model, cond, **args)


# --- the contract --------------------------------------------------------------------------------


def test_node_schema_is_backward_compatible_with_the_snapshot():
    """Ids, input names/types/order and defaults of released nodes never change; inputs may only be
    appended at the end, as optional inputs."""
    old = json.loads((DATA / "node_schema.json").read_text())
    new = pack_schema(pack)
    for node_id, o in old.items():
        assert node_id in new, f"node {node_id} was removed or renamed: retire it as deprecated instead"
        n = new[node_id]
        assert n["outputs"][: len(o["outputs"])] == o["outputs"], f"{node_id}: outputs changed"
        assert len(n["inputs"]) >= len(o["inputs"]), f"{node_id}: inputs were removed"
        for a, b in zip(o["inputs"], n["inputs"]):
            assert (a["name"], a["type"], a["section"]) == (b["name"], b["type"], b["section"]), (
                f"{node_id}: input {a['name']} changed to {b}"
            )
            assert a.get("default") == b.get("default"), (
                f"{node_id}.{a['name']}: default changed (old workflows would change behaviour)"
            )
            if a.get("options"):
                assert set(a["options"]) <= set(b["options"]), f"{node_id}.{a['name']}: combo values removed"
        for extra in n["inputs"][len(o["inputs"]) :]:
            assert extra["section"] == "optional", f"{node_id}.{extra['name']}: new inputs must be optional, at the end"


def test_node_schema_snapshot_is_current():
    assert pack_schema(pack) == json.loads((DATA / "node_schema.json").read_text()), (
        "The node schema changed compatibly: run `python tests/update_node_schema.py` and commit the snapshot."
    )


def test_every_node_has_description_tooltips_and_one_category_root():
    for node_id, cls in M.items():
        assert cls.DESCRIPTION and cls.CATEGORY.startswith("Imagen Video"), node_id
        for sec in ("required", "optional"):
            for name, spec in cls.INPUT_TYPES().get(sec, {}).items():
                assert len(spec) > 1 and spec[1].get("tooltip"), f"{node_id}.{name} has no tooltip"
    assert set(pack.NODE_DISPLAY_NAME_MAPPINGS) == set(M)


@pytest.mark.parametrize("path", sorted((ROOT / "example_workflows").glob("*.json")), ids=lambda p: p.stem)
def test_example_workflows_validate_against_the_schemas(path):
    from make_example_workflows import all_schemas

    wf = json.loads(path.read_text())
    schemas = all_schemas()
    assert wf["version"] == 0.4 and wf["nodes"] and wf["links"]
    assert validate_workflow(wf, schemas) == []
    api = ui_to_api(wf, schemas)
    assert all(v["class_type"] in schemas for v in api.values())


def test_example_workflows_are_up_to_date():
    from make_example_workflows import WORKFLOWS, all_schemas

    schemas = all_schemas()
    for name, fn in WORKFLOWS.items():
        committed = json.loads((ROOT / "example_workflows" / f"{name}.json").read_text())
        assert committed == json.loads(json.dumps(fn(schemas).to_json())), f"run python tests/make_example_workflows.py ({name})"


# --- running the nodes -----------------------------------------------------------------------------


def test_full_cascade_through_the_nodes(models, cond):
    r = run_base(models, cond)
    images, fps, per_video = r["result"]
    assert images.shape == (4, 8, 8, 3) and fps == 4.0 and per_video == 4 and images.min() >= 0 and images.max() <= 1
    assert r["ui"]["animated"] == (True,) and r["ui"]["images"][0]["type"] == "temp"
    assert r["ui"]["imagen_video_info"] == [{"frames": 4, "width": 8, "height": 8, "fps": 4.0}]
    tsr = M["ImagenVideoTemporalSR"]().interpolate(models["tsr"], images, fps, cond, 2, "imagen", 0.3, 2, 2, 1.0)
    images2, fps2, per_video2 = tsr["result"]
    assert images2.shape == (8, 8, 8, 3) and fps2 == 8.0 and per_video2 == 8
    ssr = M["ImagenVideoSpatialSR"]().upscale(models["ssr"], images2, cond, 2.0, 0.3, 3, 2, 1.0)
    assert ssr["result"][0].shape == (8, 16, 16, 3)


def test_same_seed_same_video(models, cond):
    a = run_base(models, cond, seed=5)["result"][0]
    b = run_base(models, cond, seed=5)["result"][0]
    c = run_base(models, cond, seed=6)["result"][0]
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_sr_nodes_accept_any_image_input(models, cond):
    odd = torch.rand(5, 7, 9, 3)  # from any IMAGE node: odd sizes, 5 frames
    out = M["ImagenVideoSpatialSR"]().upscale(models["ssr"], odd, cond, 2.0, 0.3, 0, 2, 1.0)["result"][0]
    assert out.shape == (5, 14, 18, 3)
    out, fps, _ = M["ImagenVideoTemporalSR"]().interpolate(models["tsr"], odd, 12.0, cond, 2, "interpolate", 0.3, 0, 2, 1.0)[
        "result"
    ]
    assert out.shape == (9, 7, 9, 3) and fps == 24.0
    rgba = torch.rand(3, 8, 8, 4)
    assert M["ImagenVideoSpatialSR"]().upscale(models["ssr"], rgba, cond, 2.0, 0.3, 0, 1, 1.0)["result"][0].shape == (
        3,
        16,
        16,
        3,
    )


def test_tsr_node_copies_a_moving_block_with_motion_search(models, cond):
    """motion_search (added later, default 0: what saved workflows did) reaches the TSR's projection: a
    block moving 4 px per input frame lands halfway in the inserted frames; the SSR node's student and a
    value out of range are refused before any work."""
    frames = torch.zeros(3, 16, 16, 3)
    for i in range(3):
        frames[i, 5:11, 1 + 4 * i : 5 + 4 * i] = 0.9
    truth = torch.zeros(5, 16, 16, 3)
    for i in range(5):
        truth[i, 5:11, 1 + 2 * i : 5 + 2 * i] = 0.9
    node = M["ImagenVideoTemporalSR"]()
    args = (models["tsr"], frames, 4.0, cond, 2, "interpolate", 0.1, 0, 2, 0.0)

    def run(**kw):
        out = node.interpolate(*args, consistency=True, **kw)["result"][0]
        return (out[1::2] - truth[1::2]).abs().mean().item()

    assert run(motion_search=4.0) < 0.2 * run()
    with pytest.raises(ValueError, match="motion_search"):
        node.interpolate(*args, consistency=True, motion_search=9.0)
    with pytest.raises(ValueError, match="motion_search"):
        M["ImagenVideoDistilledSampler"]().sample(
            models["ssr_distilled"], cond, 0, 4, 3.0, "ddim", images=torch.rand(4, 8, 8, 3), consistency=True, motion_search=2.0
        )


def test_ssr_tiles_and_windows(models, cond):
    imgs = torch.rand(9, 16, 16, 3)
    out = M["ImagenVideoSpatialSR"]().upscale(models["ssr"], imgs, cond, 2.0, 0.3, 0, 1, 1.0, None, 4, 16)["result"][0]
    assert out.shape == (9, 32, 32, 3)


@pytest.mark.parametrize("role", ["base", "tsr", "ssr"])
def test_distilled_sampler_runs_every_stage(models, cond, role):
    node = M["ImagenVideoDistilledSampler"]()
    kw = {} if role == "base" else {"images": torch.rand(4, 8, 8, 3)}
    out, fps = node.sample(
        models[f"{role}_distilled"], cond, 0, 4, 3.0, "distilled_stochastic", fps=4.0, frames=4, width=8, height=8, **kw
    )["result"]
    expected = {"base": (4, 8, 8, 3), "tsr": (8, 8, 8, 3), "ssr": (4, 16, 16, 3)}[role]
    assert out.shape == expected and fps == (8.0 if role == "tsr" else 4.0)


def test_distilled_sampler_refusals(models, cond):
    node = M["ImagenVideoDistilledSampler"]()
    with pytest.raises(ValueError, match="is not a distilled student"):
        node.sample(models["base"], cond, 0, 8, 3.0, "distilled_stochastic")
    with pytest.raises(ValueError, match="distilled for 4/2 steps; received 8"):
        node.sample(models["base_distilled"], cond, 0, 8, 3.0, "distilled_stochastic")
    with pytest.raises(ValueError, match="connect the input frames"):
        node.sample(models["ssr_distilled"], cond, 0, 4, 3.0, "distilled_stochastic")
    with pytest.raises(ValueError, match="no negative prompt"):
        run_base(models, cond, model=models["base_distilled"], steps=4, negative=cond)


def test_bad_inputs_give_clear_errors(models, cond):
    with pytest.raises(ValueError, match="needs a spatial super-resolution .* tsr.safetensors is a TSR x2"):
        M["ImagenVideoSpatialSR"]().upscale(models["tsr"], torch.rand(2, 8, 8, 3), cond, 2.0, 0.3, 0, 1, 1.0)
    with pytest.raises(ValueError, match="needs a base"):
        run_base(models, cond, model=models["ssr"])
    with pytest.raises(ValueError, match="Impossible size"):
        run_base(models, cond, width=9)
    with pytest.raises(ValueError, match="power of 2"):
        M["ImagenVideoTemporalSR"]().interpolate(models["tsr"], torch.rand(3, 8, 8, 3), 4.0, cond, 3, "imagen", 0.3, 0, 1, 1.0)
    with pytest.raises(ValueError, match="frame_count_mode"):
        M["ImagenVideoTemporalSR"]().interpolate(models["tsr"], torch.rand(3, 8, 8, 3), 4.0, cond, 2, "blend", 0.3, 0, 1, 1.0)
    with pytest.raises(ValueError, match="prompt is empty"):
        M["ImagenVideoTextEncode"]().encode(None, "   ")
    with pytest.raises(FileNotFoundError, match="not found in models/imagen_video"):
        M["ImagenVideoModelLoader"]().load("missing.safetensors")
    with pytest.raises(ValueError, match="NaN"):
        M["ImagenVideoSpatialSR"]().upscale(models["ssr"], torch.full((2, 8, 8, 3), float("nan")), cond, 2.0, 0.3, 0, 1, 1.0)
    with pytest.raises(ValueError, match="fps must be a positive"):
        run_base(models, cond, fps=0.0)


def test_t5_width_conditioning_from_core_cliptextencode_is_refused(models):
    t5_cond = [[torch.randn(1, 256, 4096), {"pooled_output": torch.zeros(1, 2048)}]]
    with pytest.raises(ValueError, match="width 384, but the conditioning is 4096 wide"):
        run_base(models, t5_cond)


def test_core_style_conditioning_with_zeroed_padding_is_accepted(models):
    """CONDITIONING from core CLIPTextEncode: no mask, masked padding zeroed out (ComfyUI's T5 does this)."""
    tokens = torch.zeros(1, 20, 384)
    tokens[0, :6] = torch.randn(6, 384)
    out = run_base(models, [[tokens, {"pooled_output": torch.zeros(1, 768)}]])["result"][0]
    assert out.shape == (4, 8, 8, 3)


def test_cancel_stops_within_one_step(models, cond):
    calls = []
    orig = adapter.Progress.update

    def spy(self, done, preview=None):
        calls.append(done)
        if len(calls) == 2:
            adapter.request_interrupt(True)
        return orig(self, done, preview)

    adapter.Progress.update = spy
    try:
        with pytest.raises(adapter.Interrupted):
            run_base(models, cond, steps=50)
    finally:
        adapter.Progress.update = orig
        adapter.request_interrupt(False)
    assert len(calls) <= 3  # stopped at the next update after Cancel, not after 50 steps
    assert run_base(models, cond)["result"][0].shape == (4, 8, 8, 3)  # ready for the next prompt


# --- story nodes ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def story_models():
    return M["ImagenVideoTextEncoderLoader"]().load("all-MiniLM-L6-v2 (embedded)")[0]


STORY_ARGS = dict(
    fps=4.0,
    seconds_per_scene=1.0,
    seed=0,
    steps=2,
    guidance=3.0,
    sampler_name="ddim",
    context_frames=1,
    transition="blend",
    transition_frames=2,
)


def test_story_node_makes_base_frames(models, story_models):
    story = "a red circle moving right | 6f\na blue square moving up | 5f"
    images, fps = M["ImagenVideoStory"]().generate(models["base"], story_models, story, **STORY_ARGS)["result"]
    assert images.shape == (11, 8, 8, 3) and fps == 4.0


def test_story_to_video_streams_the_whole_cascade_to_a_file(models, story_models, tmp_path, monkeypatch):
    from imagen_video_pack.cascade.video_io import read_video

    monkeypatch.setattr(adapter, "output_directory", lambda: tmp_path)
    r = M["ImagenVideoStoryToVideo"]().generate(
        models["base"],
        story_models,
        "a red circle moving right. a blue square moving up.",
        **STORY_ARGS,
        sr_steps=2,
        sr_guidance=1.0,
        filename_prefix="iv/story",
        tsr_model=models["tsr"],
        ssr_model=models["ssr"],
    )
    path, fps = r["result"]
    frames, rate = read_video(path)
    assert frames.shape == (16, 16, 16, 3) and fps == 8.0 and rate == pytest.approx(8.0)  # 2 scenes x 4 frames, TSR x2, SSR x2
    assert r["ui"]["images"][0] == {"filename": Path(path).name, "subfolder": "iv", "type": "output"}


def test_story_to_video_samples_the_ssr_on_its_refine_grid_and_the_tsr_on_the_uniform_one(
    models, story_models, tmp_path, monkeypatch
):
    """ssr_refine_from (added later, default 1: the uniform grid of saved workflows) reaches the SSR's
    options only; a value the schedule refuses is refused before any work."""
    seen = {}

    class Recorded(Exception):
        pass

    def record(*args, options, **kw):
        seen.update(options)
        raise Recorded

    monkeypatch.setattr(adapter, "output_directory", lambda: tmp_path)
    monkeypatch.setattr(pack.nodes.story, "run_story", record)
    args = dict(sr_steps=2, sr_guidance=0.0, filename_prefix="r", tsr_model=models["tsr"], ssr_model=models["ssr"])
    node = M["ImagenVideoStoryToVideo"]()
    with pytest.raises(Recorded):
        node.generate(models["base"], story_models, "a red circle | 6f", **STORY_ARGS, **args)
    assert seen["ssr"].refine_from == 1.0 and seen["tsr"].refine_from == 1.0
    with pytest.raises(Recorded):
        node.generate(models["base"], story_models, "a red circle | 6f", **STORY_ARGS, **args, ssr_refine_from=0.2)
    assert seen["ssr"].refine_from == 0.2 and seen["tsr"].refine_from == 1.0
    assert seen["tsr"].motion_search == 0.0  # tsr_motion_search (added later): off unless set
    with pytest.raises(Recorded):
        node.generate(models["base"], story_models, "a red circle | 6f", **STORY_ARGS, **args, tsr_motion_search=3.0)
    assert seen["tsr"].motion_search == 3.0 and seen["ssr"].motion_search == 0.0
    with pytest.raises(ValueError, match="refine_from must be a time in"):
        node.generate(models["base"], story_models, "a red circle | 6f", **STORY_ARGS, **args, ssr_refine_from=0.0)


def test_story_nodes_refuse_bad_input(models, story_models):
    with pytest.raises(ValueError, match="story is empty"):
        M["ImagenVideoStory"]().generate(models["base"], story_models, "  ", **STORY_ARGS)
    with pytest.raises(ValueError, match=r"line 2 .* more than 0"):
        M["ImagenVideoStory"]().generate(models["base"], story_models, "a red circle | 1s\na blue square | 0s", **STORY_ARGS)
    with pytest.raises(ValueError, match="needs a base"):
        M["ImagenVideoStory"]().generate(models["tsr"], story_models, "a red circle", **STORY_ARGS)
    with pytest.raises(ValueError, match="tsr_model"):
        M["ImagenVideoStoryToVideo"]().generate(
            models["base"],
            story_models,
            "a red circle",
            **STORY_ARGS,
            sr_steps=2,
            sr_guidance=1.0,
            filename_prefix="x",
            tsr_model=models["ssr"],
        )
    with pytest.raises(ValueError, match="smaller than the base window"):
        M["ImagenVideoStory"]().generate(models["base"], story_models, "a red circle", **{**STORY_ARGS, "context_frames": 4})


def test_story_node_scene_change_frames_defaults_to_what_saved_workflows_did(models, story_models):
    """scene_change_frames was added later: its default -1 conditions a new scene on context_frames
    finished frames, as before; 0 starts the new scene afresh; values past the window are refused."""
    story = "a red circle moving right | 6f\na blue square moving up | 5f"
    node = M["ImagenVideoStory"]()
    old = node.generate(models["base"], story_models, story, **STORY_ARGS)["result"][0]
    same = node.generate(models["base"], story_models, story, **STORY_ARGS, scene_change_frames=STORY_ARGS["context_frames"])
    fresh = node.generate(models["base"], story_models, story, **STORY_ARGS, scene_change_frames=0)["result"][0]
    assert torch.equal(old, same["result"][0])
    assert torch.equal(old[:6], fresh[:6]) and not torch.equal(old[6:], fresh[6:])
    with pytest.raises(ValueError, match="scene_change_frames .* smaller than the base window"):
        node.generate(models["base"], story_models, story, **STORY_ARGS, scene_change_frames=4)
    with pytest.raises(ValueError, match="scene_change_frames must be -1"):
        node.generate(models["base"], story_models, story, **STORY_ARGS, scene_change_frames=-2)


def test_sr_denoise_and_the_animation_switch(models, cond):
    """denoise < 1 starts from the upsampled input (keeps it); show_animation=False writes no WEBP."""
    low = torch.rand(3, 8, 8, 3)
    up = torch.nn.functional.interpolate(low.permute(0, 3, 1, 2), size=(16, 16), mode="bilinear", antialias=True)
    up = up.permute(0, 2, 3, 1)
    ssr = M["ImagenVideoSpatialSR"]()
    full = ssr.upscale(models["ssr"], low, cond, 2.0, 0.3, 0, 4, 0.0)
    light = ssr.upscale(models["ssr"], low, cond, 2.0, 0.3, 0, 4, 0.0, denoise=0.05, show_animation=False)
    assert (light["result"][0] - up).abs().mean() < 0.5 * (full["result"][0] - up).abs().mean()
    assert "images" in full["ui"] and "images" not in light["ui"] and light["ui"]["imagen_video_info"][0]["frames"] == 3
    tsr = M["ImagenVideoTemporalSR"]().interpolate(
        models["tsr"], low, 4.0, cond, 2, "imagen", 0.3, 0, 4, 0.0, denoise=0.5, show_animation=False
    )
    assert tsr["result"][0].shape == (6, 8, 8, 3) and tsr["result"][1] == 8.0 and "images" not in tsr["ui"]
    with pytest.raises(ValueError, match="distilled student samples the step grid"):
        ssr.upscale(models["ssr_distilled"], low, cond, 2.0, 0.3, 0, 4, 1.0, denoise=0.5)


def _record_previews(monkeypatch):
    seen = []
    orig = adapter.Progress.update

    def spy(self, done, preview=None):
        seen.append(preview)
        return orig(self, done, preview)

    monkeypatch.setattr(adapter.Progress, "update", spy)
    return seen


def test_previews_follow_comfyui_preview_setting(models, cond, story_models, monkeypatch, tmp_path):
    """Live previews (stage nodes: the x0 prediction; story nodes: the newest frames) at ComfyUI's
    preview size, and none at all when ComfyUI's preview method is off."""
    seen = _record_previews(monkeypatch)
    monkeypatch.setattr(adapter, "preview_size", lambda: 256)
    run_base(models, cond)
    M["ImagenVideoStory"]().generate(models["base"], story_models, "a red circle | 6f", **STORY_ARGS)
    monkeypatch.setattr(adapter, "output_directory", lambda: tmp_path)
    M["ImagenVideoStoryToVideo"]().generate(
        models["base"], story_models, "a red circle | 6f", **STORY_ARGS, sr_steps=2, sr_guidance=0.0, filename_prefix="p"
    )
    shown = [p for p in seen if p is not None]
    assert len(shown) >= 4 and all(p[0] == "JPEG" and p[2] == 256 for p in shown)
    assert shown[0][1].size == (4 * 8, 8)  # a strip of 4 frames of the 8x8 video
    seen.clear()
    monkeypatch.setattr(adapter, "preview_size", lambda: None)
    run_base(models, cond)
    M["ImagenVideoStory"]().generate(models["base"], story_models, "a red circle | 6f", **STORY_ARGS)
    assert seen and all(p is None for p in seen)


def test_batch_size_makes_separate_videos_each_with_its_own_seed(models, cond):
    """batch_size = 3: three videos one after another in the IMAGE batch, video i the same as a
    single run with seed + i; the SR nodes keep them separate through frames_per_video."""
    batch = run_base(models, cond, seed=5, batch_size=3)["result"]
    images, fps, per_video = batch
    assert images.shape == (12, 8, 8, 3) and per_video == 4
    singles = [run_base(models, cond, seed=5 + i)["result"][0] for i in range(3)]
    assert torch.equal(images, torch.cat(singles))
    tsr = M["ImagenVideoTemporalSR"]()
    out, fps2, per2 = tsr.interpolate(
        models["tsr"], images, fps, cond, 2, "imagen", 0.3, 7, 2, 0.0, show_animation=False, frames_per_video=per_video
    )["result"]
    assert out.shape[0] == 24 and per2 == 8 and fps2 == 8.0
    for i, single in enumerate(singles):  # no frame of one video leaks into another
        alone = tsr.interpolate(models["tsr"], single, fps, cond, 2, "imagen", 0.3, 7 + i, 2, 0.0, show_animation=False)
        assert torch.equal(out[8 * i : 8 * (i + 1)], alone["result"][0])
    ssr = M["ImagenVideoSpatialSR"]().upscale(
        models["ssr"], out, cond, 2.0, 0.3, 3, 1, 0.0, show_animation=False, frames_per_video=per2
    )["result"]
    assert ssr[0].shape == (24, 16, 16, 3) and ssr[1] == 8
    with pytest.raises(ValueError, match="does not divide"):
        tsr.interpolate(models["tsr"], images, fps, cond, 2, "imagen", 0.3, 7, 2, 0.0, frames_per_video=5)
    one = run_base(models, cond)["result"]
    assert len(one) == 3 and one[2] == 4 and one[0].shape[0] == 4  # a single video: unchanged IMAGE interop


def test_a_saved_workflow_naming_a_retired_demo_file_loads_its_successor(tmp_path, monkeypatch, caplog):
    """The retired name stays in the loader's list (so the workflow validates) while its successor is there,
    and loads the successor, with a warning; a real file of that name wins."""
    from imagen_video_pack.cascade.config import DistillationInfo
    from imagen_video_pack.cascade.distill import guided_student_from
    from imagen_video_pack.cascade.stage import Stage

    (tmp_path / "imagen_video").mkdir()
    st = minilm_stage("ssr")
    g = guided_student_from(st)
    Stage(g.config.replace(distillation=DistillationInfo(steps=(2, 4), w_max=1.0)), g.net).save(
        tmp_path / "imagen_video" / "new_2step.safetensors"
    )
    monkeypatch.setattr(adapter, "PACK_MODELS", tmp_path)
    monkeypatch.setattr(
        adapter, "RETIRED_FILES", {"old_4step.safetensors": "new_2step.safetensors", "gone.safetensors": "absent.safetensors"}
    )
    names = M["ImagenVideoModelLoader"].INPUT_TYPES()["required"]["model_name"][0]
    assert names == ["new_2step.safetensors", "old_4step.safetensors"]  # no successor, no name
    with caplog.at_level("WARNING"):
        model = M["ImagenVideoModelLoader"]().load("old_4step.safetensors")[0]
    assert "old_4step.safetensors was retired; loading new_2step.safetensors" in caplog.text
    assert model.stage.config.distillation.steps == (2, 4) and model.name == "old_4step.safetensors"
    with pytest.raises(FileNotFoundError, match="gone.safetensors"):
        M["ImagenVideoModelLoader"]().load("gone.safetensors")
    Stage(st.config, st.net).save(tmp_path / "imagen_video" / "old_4step.safetensors")  # a user's own file of that name
    assert not M["ImagenVideoModelLoader"]().load("old_4step.safetensors")[0].stage.config.is_distilled
    assert M["ImagenVideoModelLoader"].INPUT_TYPES()["required"]["model_name"][0].count("old_4step.safetensors") == 1
