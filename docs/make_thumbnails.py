"""example_workflows/<name>.jpg: the template browser's thumbnail of each example workflow, made from
the video that workflow writes in a real ComfyUI server (8 frames across the video, 4 x 2 tiles).

    COMFYUI_PATH=/path/to/ComfyUI COMFYUI_PYTHON=/path/to/comfy/python python docs/make_thumbnails.py [name ...]

The workflows run with their own settings, except the CPU-sized overrides of the integration test
(the 7-stage layout at 2 steps per stage, the motorcycle story at 0.5 s per scene). The T5 route
needs the user's own T5 files: its thumbnail draws the route instead of a video.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from test_comfyui_integration import EXPECTED, Server, _schemas  # noqa: E402
from workflows import ui_to_api  # noqa: E402

TILE, COLS, ROWS, GAP = 124, 4, 2, 4
OVERRIDES = {
    "imagen_video_paper_7_stages": {
        (t, "steps"): 2 for t in ("ImagenVideoSampler", "ImagenVideoTemporalSR", "ImagenVideoSpatialSR")
    },
    "imagen_video_story_motorcycle": {("ImagenVideoStoryToVideo", "seconds_per_scene"): 0.5},
}


def _frames_of(server, entry):
    import av

    for out in entry["outputs"].values():
        for item in out.get("images", []) + out.get("videos", []):
            if item["filename"].endswith((".mp4", ".webm")):
                with av.open(str(server.out / item.get("subfolder", "") / item["filename"])) as c:
                    return [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    raise RuntimeError(f"no video in {entry['outputs']}")


def _grid(frames):
    from PIL import Image

    n = COLS * ROWS
    pick = [frames[round(i * (len(frames) - 1) / (n - 1))] for i in range(n)]
    step = TILE + GAP
    sheet = Image.new("RGB", (COLS * step + GAP, ROWS * step + GAP), (90, 90, 96))
    for i, f in enumerate(pick):
        sheet.paste(Image.fromarray(f).resize((TILE, TILE), Image.NEAREST), (GAP + (i % COLS) * step, GAP + (i // COLS) * step))
    return sheet


def _route_picture():
    from PIL import Image, ImageDraw

    img = Image.new("RGB", (COLS * (TILE + GAP) + GAP, ROWS * (TILE + GAP) + GAP), (30, 32, 38))
    d = ImageDraw.Draw(img)
    boxes = [("CLIPLoader (T5)", 20), ("CLIPTextEncode", 190), ("Imagen Video stage", 360)]
    for text, x in boxes:
        d.rounded_rectangle((x, 100, x + 140, 156), radius=10, fill=(60, 64, 80), outline=(140, 150, 200))
        d.text((x + 10, 120), text, fill=(230, 230, 240))
    for x in (160, 330):
        d.line((x, 128, x + 30, 128), fill=(240, 200, 80), width=3)
    d.text((20, 200), "your own T5 encoder and a stage trained with it", fill=(190, 190, 200))
    return img


def main(names: list[str]) -> None:
    names = names or sorted(EXPECTED)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        models = tmp / "models"
        (models / "imagen_video").mkdir(parents=True)
        (models / "text_encoders").mkdir()
        server = Server(tmp, {"imagen_video": models / "imagen_video", "text_encoders": models / "text_encoders"})
        try:
            schemas = _schemas(server)
            for name in names:
                out = ROOT / "example_workflows" / f"{name}.jpg"
                if name == "imagen_video_t5_cliploader_route":
                    _route_picture().save(out, quality=90)
                    print("wrote", out)
                    continue
                wf = json.loads((ROOT / "example_workflows" / f"{name}.json").read_text())
                r = server.queue(ui_to_api(wf, schemas, OVERRIDES.get(name)), wf)
                entry = server.wait(r["prompt_id"])
                if entry["status"]["status_str"] != "success":
                    raise RuntimeError(f"{name}: {json.dumps(entry['status'])[-2000:]}")
                _grid(_frames_of(server, entry)).save(out, quality=90)
                print("wrote", out, flush=True)
        finally:
            server.stop()


if __name__ == "__main__":
    main(sys.argv[1:])
