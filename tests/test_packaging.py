"""Packaging for ComfyUI users and the Comfy Registry: runtime requirements are what inference needs,
the registry metadata is well formed, and the registry package leaves out tests and benchmarks."""

import fnmatch
import re
import subprocess
import sys
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parent.parent


def _reqs(name: str) -> list[str]:
    return [ln.split("#")[0].strip() for ln in (ROOT / name).read_text().splitlines() if ln.split("#")[0].strip()]


def test_runtime_requirements_are_inference_only_and_match_pyproject():
    runtime = _reqs("requirements.txt")
    names = {re.split(r"[<>=!~\[ ]", r)[0].lower() for r in runtime}
    assert not names & {"torch", "torchvision", "torchaudio"}, "ComfyUI users have their own torch build"
    assert "accelerate" not in names, "accelerate is for training: requirements-train.txt"
    py = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert sorted(py["project"]["dependencies"]) == sorted(runtime)
    assert "accelerate>=0.30" in _reqs("requirements-train.txt") and "-r requirements.txt" in _reqs("requirements-train.txt")
    assert "-r requirements-train.txt" in _reqs("requirements-dev.txt")


def test_registry_metadata():
    py = tomllib.loads((ROOT / "pyproject.toml").read_text())
    project, comfy = py["project"], py["tool"]["comfy"]
    assert re.fullmatch(r"[a-z0-9][a-z0-9_.-]{0,99}", project["name"]), "registry node id: lowercase, no spaces"
    assert re.fullmatch(r"\d+\.\d+\.\d+", project["version"]), "semantic version"
    assert re.fullmatch(r"[a-z][a-z0-9-]{0,39}", comfy["PublisherId"])
    assert comfy["DisplayName"].strip() and project["description"].strip() and project["license"]
    assert comfy["includes"] == ["models"], "the demo stages ship with the package"
    assert re.fullmatch(r">=\d+\.\d+\.\d+", comfy["requires-comfyui"])


def _ignored(path: str, patterns: list[str]) -> bool:
    for p in patterns:
        if p.endswith("/") and (path.startswith(p) or f"/{p}" in f"/{path}"):
            return True
        if fnmatch.fnmatch(path, p) or fnmatch.fnmatch(Path(path).name, p):
            return True
    return False


def test_registry_package_leaves_out_tests_benchmarks_and_pickles():
    patterns = [ln.strip() for ln in (ROOT / ".comfyignore").read_text().splitlines() if ln.strip() and not ln.startswith("#")]
    files = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    shipped = [f for f in files if not _ignored(f, patterns)]
    assert not [f for f in shipped if f.startswith(("tests/", "benchmarks/", ".ci/"))]
    assert not [f for f in shipped if f.endswith((".pt", ".pth", ".ckpt", ".pkl", ".bin"))]
    for needed in ("__init__.py", "nodes/stages.py", "cascade/pipeline.py", "web/imagen_video.js", "requirements.txt"):
        assert needed in shipped
    assert [f for f in shipped if f.startswith("example_workflows/")] and [f for f in shipped if f.startswith("models/")]


def test_the_pack_and_the_library_import_without_accelerate():
    """A ComfyUI install has only requirements.txt: nothing outside training may need accelerate."""
    code = (
        "import sys; sys.modules['accelerate'] = None\n"
        "import cascade, cascade.run, cascade.story, cascade.evaluate, cascade.cli\n"
        "from packimport import load_pack; load_pack()\n"
        "from cascade.train import require_accelerate\n"
        "try:\n    require_accelerate()\nexcept ImportError as e:\n    print('refused:', e)\n"
    )
    r = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={"PYTHONPATH": f"{ROOT}:{ROOT / 'tests'}", "PATH": "/usr/bin:/bin"},
    )
    assert r.returncode == 0, r.stderr[-2000:]
    assert "refused: Training and distillation need Hugging Face accelerate" in r.stdout


def test_registry_icon_and_template_thumbnails():
    """The registry icon is the repository's docs/icon.png (square, at most 400 px), and every example
    workflow has its template-browser thumbnail (a JPEG of the same name, made from its video)."""
    from PIL import Image

    py = tomllib.loads((ROOT / "pyproject.toml").read_text())
    icon = py["tool"]["comfy"]["Icon"]
    repo = py["project"]["urls"]["Repository"].removeprefix("https://github.com/")
    assert icon == f"https://raw.githubusercontent.com/{repo}/main/docs/icon.png"
    with Image.open(ROOT / "docs" / "icon.png") as im:
        assert im.format == "PNG" and im.width == im.height <= 400
    for wf in sorted((ROOT / "example_workflows").glob("*.json")):
        thumb = wf.with_suffix(".jpg")
        assert thumb.exists(), f"{thumb.name} missing: python docs/make_thumbnails.py {wf.stem}"
        with Image.open(thumb) as im:
            assert im.format == "JPEG" and 256 <= im.width <= 1024


def test_the_web_extension_uses_public_frontend_apis_only():
    """The frontend's private stores and maps change between versions and renderers (the Vue node
    renderer kept a preview URL the extension had revoked): the extension may only use the app's
    extension hooks, public node members and the settings API."""
    js = (ROOT / "web" / "imagen_video.js").read_text(encoding="utf-8")
    private = ["nodePreviewImages", "nodeOutputs", "useNodeOutputStore", "/stores/", "/assets/", "@comfyorg/", "__vue"]
    assert not [p for p in private if p in js]
    imports = [line for line in js.splitlines() if line.startswith("import ")]
    assert imports == ['import { app } from "../../scripts/app.js";']
    assert "registerExtension" in js and "node.badges" in js


def test_every_shipped_model_file_is_a_demo_file_and_they_fit_the_budget():
    from cascade.demo import DEMO_DIR, DEMO_FILES, LEGACY_FILES, PHENAKI_DEMO_DIR, PHENAKI_DEMO_FILES

    stages = {p.name for p in DEMO_DIR.glob("*.safetensors")}
    assert stages == set(DEMO_FILES.values()) | set(LEGACY_FILES)
    assert {p.name for p in PHENAKI_DEMO_DIR.glob("*.safetensors")} == set(PHENAKI_DEMO_FILES.values())
    mb = lambda paths: sum(p.stat().st_size for p in paths) / 1e6  # noqa: E731
    assert mb(DEMO_DIR.glob("*.safetensors")) <= 30 and mb(PHENAKI_DEMO_DIR.glob("*.safetensors")) <= 10


def test_a_retired_demo_file_has_a_shipped_successor_that_samples_its_step_counts():
    """A saved workflow naming a retired file gets its successor: it must ship, and support the step count
    the retired name promised (``..._<n>step``)."""
    from cascade.checkpoint import read_stage_config
    from cascade.demo import DEMO_DIR, DEMO_FILES, RETIRED_FILES

    assert RETIRED_FILES
    for old, new in RETIRED_FILES.items():
        assert not (DEMO_DIR / old).exists() and new in DEMO_FILES.values()
        steps = int(old.rsplit("_", 1)[1].removesuffix("step.safetensors"))
        assert steps in read_stage_config(DEMO_DIR / new).distillation.steps
