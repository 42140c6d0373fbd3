"""Writes example_workflows/*.json (UI format) from compact descriptions.

Run ``python tests/make_example_workflows.py`` after changing a node's inputs; the tests check that
every example validates against the node schemas. Widget values are laid out from the schemas,
so they always match the nodes.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from packimport import ROOT, load_pack  # noqa: E402
from workflows import core_schema, is_widget, pack_schema  # noqa: E402

sys.path.insert(0, str(ROOT))
from cascade.demo import SR_AUG_LEVEL, SR_CONSISTENCY, SSR_REFINE_FROM, TSR_MOTION_SEARCH  # noqa: E402
from cascade.story import StoryOptions  # noqa: E402

OUT = ROOT / "example_workflows"
BASE, TSR, SSR = "demo_base_16f_32px.safetensors", "demo_tsr_x2_32px.safetensors", "demo_ssr_x2_64px.safetensors"
BASE_D = "demo_base_16f_32px_distilled_2step.safetensors"
TSR_D = "demo_tsr_x2_32px_distilled_1step.safetensors"
SSR_D = "demo_ssr_x2_64px_distilled_1step.safetensors"
PROMPT = "a red circle moving right quickly"
CVIVIT, MASKGIT = "demo_cvivit_17f_32px.safetensors", "demo_maskgit_17f_32px.safetensors"


# the demo cascade's settings where a node's widget default keeps the behaviour of older workflows:
# the SR stages project onto their input (cascade.demo.SR_CONSISTENCY), the SSR samples the refine grid
# (SSR_REFINE_FROM), the TSR's projection searches for motion (TSR_MOTION_SEARCH), and a story's new scene continues
# from one frame (StoryOptions.change_context), as `python -m cascade` does
DEMO_WIDGETS = {
    "ImagenVideoTemporalSR": {"consistency": SR_CONSISTENCY, "motion_search": TSR_MOTION_SEARCH},
    "ImagenVideoSpatialSR": {"consistency": SR_CONSISTENCY, "refine_from": SSR_REFINE_FROM},
    "ImagenVideoStoryToVideo": {
        "sr_noise_augmentation": SR_AUG_LEVEL,
        "sr_consistency": SR_CONSISTENCY,
        "scene_change_frames": StoryOptions().change_context,
        "ssr_refine_from": SSR_REFINE_FROM,
        "tsr_motion_search": TSR_MOTION_SEARCH,
    },
}


class Graph:
    def __init__(self, schemas):
        self.schemas, self.nodes, self.links, self.groups, self.notes = schemas, [], [], [], []

    def add(self, type_, pos, widgets=None, inputs=None, size=None, title=None):
        """``widgets``: {name: value} (the demo's settings, else defaults from the schema);
        ``inputs``: {name: (node, output_index)}."""
        sch = self.schemas[type_]
        widgets, inputs = {**DEMO_WIDGETS.get(type_, {}), **(widgets or {})}, inputs or {}
        nid = len(self.nodes) + 1
        node = {
            "id": nid,
            "type": type_,
            "pos": list(pos),
            "size": list(size or [300, 120]),
            "flags": {},
            "order": nid - 1,
            "mode": 0,
            "inputs": [],
            "outputs": [],
            "properties": {"Node name for S&R": type_},
            "widgets_values": [],
        }
        if title:
            node["title"] = title
        for e in sch["inputs"]:
            if is_widget(e):
                v = widgets.get(e["name"], e.get("default"))
                node["widgets_values"].append(v)
                if e.get("control_after_generate"):
                    node["widgets_values"].append("fixed")
                if e["name"] in inputs:  # a widget driven by a link (e.g. fps)
                    node["inputs"].append({"name": e["name"], "type": e["type"], "widget": {"name": e["name"]}, "link": None})
            else:
                node["inputs"].append(
                    {"name": e["name"], "type": e["type"], "link": None, **({"shape": 7} if e["section"] == "optional" else {})}
                )
        for i, (t, name) in enumerate(zip(sch["outputs"], sch["output_names"])):
            node["outputs"].append({"name": name, "type": t, "links": [], "slot_index": i})
        self.nodes.append(node)
        for name, (src, slot) in inputs.items():
            self.connect(src, slot, node, name)
        return node

    def connect(self, src, slot, dst, name):
        lid = len(self.links) + 1
        dst_slot = next(i for i, inp in enumerate(dst["inputs"]) if inp["name"] == name)
        typ = src["outputs"][slot]["type"]
        self.links.append([lid, src["id"], slot, dst["id"], dst_slot, typ])
        src["outputs"][slot]["links"].append(lid)
        dst["inputs"][dst_slot]["link"] = lid

    def note(self, text, pos, size=(420, 160)):
        nid = len(self.nodes) + 1
        self.nodes.append(
            {
                "id": nid,
                "type": "Note",
                "pos": list(pos),
                "size": list(size),
                "flags": {},
                "order": nid - 1,
                "mode": 0,
                "inputs": [],
                "outputs": [],
                "properties": {},
                "widgets_values": [text],
                "color": "#432",
                "bgcolor": "#653",
            }
        )

    def to_json(self):
        return {
            "last_node_id": len(self.nodes),
            "last_link_id": len(self.links),
            "nodes": self.nodes,
            "links": self.links,
            "groups": self.groups,
            "config": {},
            "extra": {"ds": {"scale": 0.8, "offset": [40, 40]}},
            "version": 0.4,
        }


def text_nodes(g, x=0, y=0, prompt=PROMPT):
    enc = g.add("ImagenVideoTextEncoderLoader", (x, y), {"encoder": "all-MiniLM-L6-v2 (embedded)"}, size=(320, 130))
    txt = g.add("ImagenVideoTextEncode", (x, y + 170), {"text": prompt}, {"text_encoder": (enc, 0)}, size=(320, 160))
    return txt


def save_video(g, images, fps, pos, prefix):
    cv = g.add("CreateVideo", pos, {"fps": 8.0}, {"images": images, "fps": fps}, size=(260, 80))
    g.add("SaveVideo", (pos[0] + 300, pos[1]), {"filename_prefix": prefix}, {"video": (cv, 0)}, size=(320, 360))


def sr_stages(g, txt, base, loaders_y):
    """TSR x2 then SSR x2 after ``base`` (a node whose outputs are IMAGE, fps), their loaders at ``loaders_y``."""
    lt = g.add("ImagenVideoModelLoader", (0, loaders_y), {"model_name": TSR})
    tsr = g.add(
        "ImagenVideoTemporalSR",
        (740, 0),
        {"seed": 43},
        {"model": (lt, 0), "images": (base, 0), "fps": (base, 1), "positive": (txt, 0)},
        size=(320, 420),
    )
    ls = g.add("ImagenVideoModelLoader", (0, loaders_y + 160), {"model_name": SSR})
    ssr = g.add(
        "ImagenVideoSpatialSR",
        (1100, 0),
        {"seed": 44},
        {"model": (ls, 0), "images": (tsr, 0), "positive": (txt, 0)},
        size=(320, 380),
    )
    return tsr, ssr


def cascade(schemas):
    g = Graph(schemas)
    txt = text_nodes(g)
    lb = g.add("ImagenVideoModelLoader", (0, 380), {"model_name": BASE})
    base = g.add("ImagenVideoSampler", (380, 0), {"seed": 42}, {"model": (lb, 0), "positive": (txt, 0)}, size=(320, 420))
    tsr, ssr = sr_stages(g, txt, base, loaders_y=540)
    save_video(g, (ssr, 0), (tsr, 1), (1460, 0), "imagen_video/cascade")
    g.note(
        "Imagen Video cascade with the demo stages: text -> base (16 frames 32x32, 4 fps) -> TSR x2 (32 frames, 8 fps) -> "
        "SSR x2 (64x64) -> SaveVideo. Every stage takes and returns IMAGE, so any of them can be swapped for another node.",
        (0, 860),
    )
    return g


def paper_7_stage(schemas):
    """The paper's layout (base, TSR, SSR, SSR, TSR, TSR, SSR) built from the demo stages repeated."""
    g = Graph(schemas)
    txt = text_nodes(g)
    lb = g.add("ImagenVideoModelLoader", (0, 380), {"model_name": BASE})
    lt = g.add("ImagenVideoModelLoader", (0, 540), {"model_name": TSR})
    ls = g.add("ImagenVideoModelLoader", (0, 700), {"model_name": SSR})
    cur = g.add(
        "ImagenVideoSampler", (380, 0), {"seed": 1, "steps": 24}, {"model": (lb, 0), "positive": (txt, 0)}, size=(300, 420)
    )
    img, fps = (cur, 0), (cur, 1)
    x = 720
    for i, kind in enumerate(["tsr", "ssr", "ssr", "tsr", "tsr", "ssr"]):
        if kind == "tsr":
            n = g.add(
                "ImagenVideoTemporalSR",
                (x, 0),
                {"seed": 10 + i, "steps": 8},
                {"model": (lt, 0), "images": img, "fps": fps, "positive": (txt, 0)},
                size=(300, 420),
                title=f"stage {i + 2}: TSR x2",
            )
            img, fps = (n, 0), (n, 1)
        else:
            n = g.add(
                "ImagenVideoSpatialSR",
                (x, 0),
                {"seed": 10 + i, "steps": 8},
                {"model": (ls, 0), "images": img, "positive": (txt, 0)},
                size=(300, 380),
                title=f"stage {i + 2}: SSR x2",
            )
            img = (n, 0)
        x += 340
    save_video(g, img, fps, (x, 0), "imagen_video/seven_stage")
    g.note(
        "The paper's 7-stage layout (base, TSR, SSR, SSR, TSR, TSR, SSR) built by repeating the demo TSR and SSR stages: "
        "16 frames 32x32 at 4 fps -> 128 frames 256x256 at 32 fps. Heavy on a CPU (several minutes); SR stages use 8 steps here.",
        (0, 860),
    )
    return g


def distilled(schemas):
    g = Graph(schemas)
    txt = text_nodes(g)
    lb = g.add("ImagenVideoModelLoader", (0, 380), {"model_name": BASE_D})
    base = g.add(
        "ImagenVideoDistilledSampler",
        (380, 0),
        {"seed": 42, "steps": 2},
        {"model": (lb, 0), "positive": (txt, 0)},
        size=(320, 480),
    )
    lt = g.add("ImagenVideoModelLoader", (0, 540), {"model_name": TSR_D})
    tsr = g.add(
        "ImagenVideoDistilledSampler",
        (740, 0),
        {"seed": 43, "guidance": 0.0, "steps": 1, "consistency": SR_CONSISTENCY, "motion_search": TSR_MOTION_SEARCH},
        {"model": (lt, 0), "positive": (txt, 0), "images": (base, 0), "fps": (base, 1)},
        size=(320, 480),
    )
    ls = g.add("ImagenVideoModelLoader", (0, 700), {"model_name": SSR_D})
    ssr = g.add(
        "ImagenVideoDistilledSampler",
        (1100, 0),
        {"seed": 44, "guidance": 0.0, "steps": 1, "sampler_name": "ddim", "consistency": SR_CONSISTENCY},
        {"model": (ls, 0), "positive": (txt, 0), "images": (tsr, 0)},
        size=(320, 480),
    )
    save_video(g, (ssr, 0), (tsr, 1), (1460, 0), "imagen_video/distilled")
    g.note(
        "The fast path (python -m cascade generate --fast): three guided-distilled students (one network evaluation per "
        "step, guidance baked in): the base in 2 steps, the TSR in 1 and the SSR in 1, four evaluations per video where "
        "the default cascade takes 64; all four attributes right within 5 points of the default's.",
        (0, 860),
    )
    return g


def ssr_swapped(schemas):
    g = Graph(schemas)
    txt = text_nodes(g)
    lb = g.add("ImagenVideoModelLoader", (0, 380), {"model_name": BASE})
    base = g.add("ImagenVideoSampler", (380, 0), {"seed": 42}, {"model": (lb, 0), "positive": (txt, 0)}, size=(320, 420))
    lt = g.add("ImagenVideoModelLoader", (0, 540), {"model_name": TSR})
    tsr = g.add(
        "ImagenVideoTemporalSR",
        (740, 0),
        {"seed": 43},
        {"model": (lt, 0), "images": (base, 0), "fps": (base, 1), "positive": (txt, 0)},
        size=(320, 420),
    )
    up = g.add("ImageScaleBy", (1100, 0), {"upscale_method": "bicubic", "scale_by": 2.0}, {"image": (tsr, 0)}, size=(300, 100))
    save_video(g, (up, 0), (tsr, 1), (1440, 0), "imagen_video/ssr_swapped")
    g.note(
        "The SSR stage swapped for core ImageScaleBy: stages exchange plain IMAGE batches, so any upscaler (or an upscale model) fits.",
        (0, 700),
    )
    return g


def t5_route(schemas):
    g = Graph(schemas)
    clip = g.add("CLIPLoader", (0, 0), {"clip_name": "t5xxl_fp16.safetensors", "type": "mochi"}, size=(320, 130))
    txt = g.add("CLIPTextEncode", (0, 170), {"text": PROMPT}, {"clip": (clip, 0)}, size=(320, 160))
    lb = g.add("ImagenVideoModelLoader", (0, 380), {"model_name": "my_t5xxl_base.safetensors"})
    base = g.add("ImagenVideoSampler", (380, 0), {"seed": 42}, {"model": (lb, 0), "positive": (txt, 0)}, size=(320, 420))
    save_video(g, (base, 0), (base, 1), (740, 0), "imagen_video/t5")
    g.note(
        "T5 route (needs files you provide): core CLIPLoader loads a T5 encoder from models/text_encoders (type 'mochi' for T5-XXL v1.1 "
        "with an attention mask) and core CLIPTextEncode encodes the prompt. The stage must have been trained with that same T5 "
        "(python -m cascade train --text-encoder models/text_encoders/t5xxl_fp16.safetensors ...). The demo stages use MiniLM and "
        "refuse 4096-wide T5 conditioning with a clear error.",
        (0, 560),
        size=(460, 200),
    )
    return g


SHAPES_STORY = """a red circle moving right quickly | 4s
the red circle moving up slowly | 4s
a blue square moving left quickly | 4s
the blue square moving down slowly | 4s
a yellow triangle moving right quickly | 4s"""


def story(schemas, text, prefix, note, seconds=4.0):
    g = Graph(schemas)
    enc = g.add("ImagenVideoTextEncoderLoader", (0, 0), {"encoder": "all-MiniLM-L6-v2 (embedded)"}, size=(320, 130))
    lb = g.add("ImagenVideoModelLoader", (0, 170), {"model_name": BASE})
    lt = g.add("ImagenVideoModelLoader", (0, 330), {"model_name": TSR})
    ls = g.add("ImagenVideoModelLoader", (0, 490), {"model_name": SSR})
    g.add(
        "ImagenVideoStoryToVideo",
        (380, 0),
        {"story": text, "seed": 7, "seconds_per_scene": seconds, "filename_prefix": prefix},
        {"model": (lb, 0), "text_encoder": (enc, 0), "tsr_model": (lt, 0), "ssr_model": (ls, 0)},
        size=(420, 640),
    )
    g.note(note, (0, 650), size=(360, 220))
    return g


def story_shapes(schemas):
    return story(
        schemas,
        SHAPES_STORY,
        "imagen_video/story_shapes",
        "Story mode with the demo cascade: five scenes in the demo vocabulary. Each base window continues from the last "
        "finished frames; TSR and SSR run over the stream in overlapping chunks and the video is written while it is made "
        "(bounded memory). 20 s of 64x64 video at 8 fps.",
    )


def story_motorcycle(schemas):
    text = (ROOT / "stories" / "motorcycle.txt").read_text().strip()
    return story(
        schemas,
        text,
        "imagen_video/story_motorcycle",
        "The 19-sentence motorcycle story: one scene per sentence (4 s each, 76 s in all). It needs stages trained on real "
        "video with a matching text encoder (python -m cascade train --data <folder of captioned videos>); with the demo "
        "cascade, trained only on moving shapes, it runs but shows shapes.",
    )


def extend_video(schemas):
    """Extend a video: its last 4 frames start a second clip (known frames), which is appended."""
    g = Graph(schemas)
    txt = text_nodes(g)
    lb = g.add("ImagenVideoModelLoader", (0, 380), {"model_name": BASE})
    first = g.add("ImagenVideoSampler", (380, 0), {"seed": 42}, {"model": (lb, 0), "positive": (txt, 0)}, size=(320, 460))
    tail = g.add("ImageFromBatch", (380, 500), {"batch_index": 12, "length": 4}, {"image": (first, 0)}, size=(260, 110))
    txt2 = text_nodes(g, 0, 560, "a red circle moving up quickly")
    second = g.add(
        "ImagenVideoSampler",
        (740, 0),
        {"seed": 43, "known_noise": 0.2},
        {"model": (lb, 0), "positive": (txt2, 0), "start_images": (tail, 0)},
        size=(320, 460),
        title="ImagenVideoSampler (continues from the last 4 frames)",
    )
    new = g.add("ImageFromBatch", (740, 500), {"batch_index": 4, "length": 12}, {"image": (second, 0)}, size=(260, 110))
    both = g.add("ImageBatch", (1100, 0), {}, {"image1": (first, 0), "image2": (new, 0)}, size=(220, 80))
    lt = g.add("ImagenVideoModelLoader", (1100, 140), {"model_name": TSR})
    tsr = g.add(
        "ImagenVideoTemporalSR",
        (1460, 0),
        {"seed": 44},
        {"model": (lt, 0), "images": (both, 0), "fps": (first, 1), "positive": (txt, 0)},
        size=(320, 420),
    )
    ls = g.add("ImagenVideoModelLoader", (1100, 300), {"model_name": SSR})
    ssr = g.add(
        "ImagenVideoSpatialSR",
        (1820, 0),
        {"seed": 45},
        {"model": (ls, 0), "images": (tsr, 0), "positive": (txt, 0)},
        size=(320, 380),
    )
    save_video(g, (ssr, 0), (tsr, 1), (2180, 0), "imagen_video/extend")
    g.note(
        "Extend a video: the second base sampler takes the last 4 frames of the first clip as start_images (its known-frame "
        "channels, noise-augmented by known_noise) and continues with a new prompt; its first 4 frames (the given ones) are "
        "dropped and the rest appended: 16 + 12 base frames, then TSR x2 and SSR x2. For image-to-video, connect a "
        "LoadImage to start_images (end_images sets the last frames).",
        (380, 680),
    )
    return g


def core_sampling(schemas):
    """Core custom sampling on every stage: KSamplerSelect / our SamplerSelect and SIGMAS nodes."""
    g = Graph(schemas)
    txt = text_nodes(g)
    lb = g.add("ImagenVideoModelLoader", (0, 380), {"model_name": BASE})
    ks = g.add("KSamplerSelect", (0, 540), {"sampler_name": "dpmpp_2m"}, size=(300, 60))
    sig = g.add("ImagenVideoScheduler", (0, 640), {"steps": 16, "denoise": 1.0}, {"model": (lb, 0)}, size=(300, 100))
    base = g.add(
        "ImagenVideoSampler",
        (380, 0),
        {"seed": 42},
        {"model": (lb, 0), "positive": (txt, 0), "sampler": (ks, 0), "sigmas": (sig, 0)},
        size=(320, 500),
    )
    lt = g.add("ImagenVideoModelLoader", (380, 560), {"model_name": TSR})
    anc = g.add("ImagenVideoSamplerSelect", (380, 720), {"sampler_name": "ancestral", "gamma": 0.3}, size=(300, 80))
    tsr = g.add(
        "ImagenVideoTemporalSR",
        (740, 0),
        {"seed": 43},
        {"model": (lt, 0), "images": (base, 0), "fps": (base, 1), "positive": (txt, 0), "sampler": (anc, 0)},
        size=(320, 460),
    )
    ls = g.add("ImagenVideoModelLoader", (740, 560), {"model_name": SSR})
    ea = g.add("KSamplerSelect", (740, 720), {"sampler_name": "euler_ancestral"}, size=(300, 60))
    ssr = g.add(
        "ImagenVideoSpatialSR",
        (1100, 0),
        {"seed": 44},
        {"model": (ls, 0), "images": (tsr, 0), "positive": (txt, 0), "sampler": (ea, 0)},
        size=(320, 460),
    )
    save_video(g, (ssr, 0), (tsr, 1), (1460, 0), "imagen_video/core_sampling")
    g.note(
        "Core custom sampling: any SAMPLER (KSamplerSelect, SamplerEulerAncestral, ... or ImagenVideoSamplerSelect for the "
        "paper's ancestral sampler) and any SIGMAS (ImagenVideoScheduler, KarrasScheduler, SplitSigmas ...) plug into the "
        "optional sampler / sigmas inputs of every stage node. Guidance, thresholding, windows and known frames stay the "
        "stage's own. Here: dpmpp_2m on 16 steps of the base's own schedule, the paper's ancestral sampler on the TSR, "
        "euler_ancestral on the SSR.",
        (0, 860),
    )
    return g


def phenaki_loader(g, pos):
    return g.add("ImagenVideoPhenakiLoader", pos, {"tokenizer": CVIVIT, "transformer": MASKGIT}, size=(320, 130))


def phenaki_base(schemas):
    g = Graph(schemas)
    txt = text_nodes(g)
    ph = phenaki_loader(g, (0, 380))
    base = g.add("ImagenVideoPhenakiSampler", (380, 0), {"seed": 42}, {"phenaki": (ph, 0), "positive": (txt, 0)}, size=(320, 420))
    save_video(g, (base, 0), (base, 1), (740, 0), "imagen_video/phenaki_base")
    g.note(
        "Phenaki as the base: the MaskGIT transformer fills the C-ViViT token grid of 17 frames (32x32, 4 fps) from the text "
        "in a few confidence-ordered steps, and the causal tokenizer decodes it. Its IMAGE + fps output goes to any video node.",
        (0, 560),
    )
    return g


def phenaki_cascade(schemas):
    g = Graph(schemas)
    txt = text_nodes(g)
    ph = phenaki_loader(g, (0, 380))
    base = g.add("ImagenVideoPhenakiSampler", (380, 0), {"seed": 42}, {"phenaki": (ph, 0), "positive": (txt, 0)}, size=(320, 420))
    tsr, ssr = sr_stages(g, txt, base, loaders_y=560)
    save_video(g, (ssr, 0), (tsr, 1), (1460, 0), "imagen_video/phenaki_cascade")
    g.note(
        "Phenaki base -> Imagen Video TSR x2 -> SSR x2: the SR stages take the Phenaki frames like any other video "
        "(17 frames 32x32 at 4 fps -> 33 frames 64x64 at 8 fps).",
        (0, 880),
    )
    return g


def phenaki_story(schemas):
    g = Graph(schemas)
    enc = g.add("ImagenVideoTextEncoderLoader", (0, 0), {"encoder": "all-MiniLM-L6-v2 (embedded)"}, size=(320, 130))
    ph = phenaki_loader(g, (0, 170))
    st = g.add(
        "ImagenVideoPhenakiStory",
        (380, 0),
        {"story": SHAPES_STORY, "seed": 7},
        {"phenaki": (ph, 0), "text_encoder": (enc, 0)},
        size=(420, 520),
    )
    save_video(g, (st, 0), (st, 1), (840, 0), "imagen_video/phenaki_story")
    g.note(
        "Phenaki's own story mode: the first clip comes from the first line; each next line re-encodes the last frames with "
        "the causal tokenizer, keeps their tokens and fills the rest from the new prompt, so memory does not grow with the story.",
        (0, 340),
        size=(360, 200),
    )
    return g


WORKFLOWS = {
    "imagen_video_cascade": cascade,
    "imagen_video_paper_7_stages": paper_7_stage,
    "imagen_video_distilled_fast": distilled,
    "imagen_video_ssr_swapped_for_imagescaleby": ssr_swapped,
    "imagen_video_t5_cliploader_route": t5_route,
    "imagen_video_story_shapes": story_shapes,
    "imagen_video_story_motorcycle": story_motorcycle,
    "imagen_video_extend_video": extend_video,
    "imagen_video_core_sampling": core_sampling,
    "imagen_video_phenaki_base": phenaki_base,
    "imagen_video_phenaki_cascade": phenaki_cascade,
    "imagen_video_phenaki_story": phenaki_story,
}


def all_schemas():
    schemas = {**core_schema(), **pack_schema(load_pack())}
    schemas["Note"] = {"inputs": [{"name": "text", "type": "STRING", "section": "required"}], "outputs": [], "output_names": []}
    return schemas


def main() -> None:
    schemas = all_schemas()
    OUT.mkdir(exist_ok=True)
    for name, fn in WORKFLOWS.items():
        (OUT / f"{name}.json").write_text(json.dumps(fn(schemas).to_json(), indent=1) + "\n")
        print("wrote", OUT / f"{name}.json")


if __name__ == "__main__":
    main()
