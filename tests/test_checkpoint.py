import json
import pickle
import struct

import pytest
import torch
from helpers import tiny_stage
from safetensors.torch import save_file

from cascade.checkpoint import CheckpointError, check_safetensors_file, read_stage_config
from cascade.stage import load_stage
from cascade.text import TextEmbedding


def test_round_trip_same_outputs(tmp_path):
    stage = tiny_stage("ssr")
    path = tmp_path / "ssr.safetensors"
    stage.save(path)
    loaded = load_stage(path, role="ssr")
    assert loaded.config == stage.config
    # The round trip is bitwise on the weights ...
    original, reloaded = stage.net.state_dict(), loaded.net.state_dict()
    assert original.keys() == reloaded.keys()
    assert all(torch.equal(original[k], reloaded[k]) for k in original)
    z, c = torch.randn(1, 3, 2, 8, 8), torch.randn(1, 3, 2, 8, 8)
    t = TextEmbedding(torch.randn(1, 2, 8), torch.ones(1, 2, dtype=torch.bool), torch.randn(1, 8))
    a = stage.net(z, torch.zeros(1), cond=c, aug_logsnr=torch.ones(1), text=t)
    b = loaded.net(z, torch.zeros(1), cond=c, aug_logsnr=torch.ones(1), text=t)
    # ... and the outputs agree up to float rounding: oneDNN may pick a different kernel
    # path for differently aligned buffers (seen: 7e-9 apart on CPU CI).
    torch.testing.assert_close(a, b, rtol=0, atol=1e-6)
    meta = check_safetensors_file(path)["__metadata__"]
    cfg = json.loads(meta["config"])
    assert cfg["role"] == "ssr" and cfg["text_dim"] == 8 and cfg["parameterization"] == "v"
    assert cfg["schedule"] == {"kind": "cosine_truncated", "logsnr_min": -20.0, "logsnr_max": 20.0}


def test_fp16_export_loads(tmp_path):
    stage = tiny_stage("base")
    stage.save(tmp_path / "b.safetensors", dtype=torch.float16)
    assert load_stage(tmp_path / "b.safetensors", dtype=torch.bfloat16).dtype == torch.bfloat16


def test_export_lists_a_students_measured_step_counts(tmp_path):
    """``export --steps 2,4``: the student's file then supports both; it must keep its own and be a student."""
    from cascade.cli import main
    from cascade.config import DistillationInfo
    from cascade.distill import guided_student_from
    from cascade.stage import Stage

    teacher = tiny_stage("ssr")
    g = guided_student_from(teacher)
    Stage(g.config.replace(distillation=DistillationInfo(steps=(2,), sampler="ddim")), g.net).save(tmp_path / "s.safetensors")
    assert main(["export", str(tmp_path / "s.safetensors"), str(tmp_path / "o.safetensors"), "--fp16", "--steps", "4,2"]) == 0
    d = read_stage_config(tmp_path / "o.safetensors").distillation
    assert d.steps == (2, 4) and d.sampler == "ddim"
    with pytest.raises(SystemExit, match="must keep the step counts"):
        main(["export", str(tmp_path / "s.safetensors"), str(tmp_path / "x.safetensors"), "--steps", "4"])
    with pytest.raises(SystemExit, match="comma-separated"):
        main(["export", str(tmp_path / "s.safetensors"), str(tmp_path / "x.safetensors"), "--steps", "two"])
    teacher.save(tmp_path / "t.safetensors")
    with pytest.raises(SystemExit, match="not a distilled student"):
        main(["export", str(tmp_path / "t.safetensors"), str(tmp_path / "x.safetensors"), "--steps", "2"])
    assert not (tmp_path / "x.safetensors").exists()


def test_wrong_role_is_named(tmp_path):
    tiny_stage("tsr").save(tmp_path / "tsr.safetensors")
    with pytest.raises(CheckpointError, match=r"tsr.safetensors is a TSR x2 .* but a ssr stage was expected"):
        load_stage(tmp_path / "tsr.safetensors", role="ssr")


def test_pickles_are_refused_never_loaded(tmp_path):
    pt = tmp_path / "model.pt"
    torch.save({"w": torch.zeros(1)}, pt)
    with pytest.raises(CheckpointError, match="never loaded"):
        load_stage(pt)
    disguised = tmp_path / "model.safetensors"

    class Boom:
        def __reduce__(self):
            return (exec, ("raise SystemExit('unpickled!')",))

    disguised.write_bytes(pickle.dumps(Boom(), protocol=4))
    with pytest.raises(CheckpointError, match="pickle"):
        load_stage(disguised)
    zipped = tmp_path / "zipped.safetensors"
    zipped.write_bytes(pt.read_bytes())
    with pytest.raises(CheckpointError, match="pickle"):
        load_stage(zipped)


def test_truncated_and_corrupt_files(tmp_path):
    path = tmp_path / "s.safetensors"
    tiny_stage("base").save(path)
    data = path.read_bytes()
    (tmp_path / "trunc.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated"):
        load_stage(tmp_path / "trunc.safetensors")
    (tmp_path / "tiny.safetensors").write_bytes(b"abc")
    with pytest.raises(CheckpointError, match="truncated"):
        load_stage(tmp_path / "tiny.safetensors")
    bad = bytearray(data)
    bad[8:12] = b"\xff\xfe\xfd\xfc"
    (tmp_path / "corrupt.safetensors").write_bytes(bytes(bad))
    with pytest.raises(CheckpointError, match="corrupt"):
        load_stage(tmp_path / "corrupt.safetensors")
    huge = struct.pack("<Q", 10**12) + b"{}"
    (tmp_path / "huge.safetensors").write_bytes(huge)
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        load_stage(tmp_path / "huge.safetensors")
    with pytest.raises(FileNotFoundError):
        load_stage(tmp_path / "missing.safetensors")


def test_missing_key_and_wrong_shape_are_named(tmp_path):
    stage = tiny_stage("base")
    path = tmp_path / "s.safetensors"
    stage.save(path)
    meta = check_safetensors_file(path)["__metadata__"]
    sd = {k: v.clone() for k, v in stage.net.state_dict().items()}
    key = "conv_in.weight"
    sd[key] = torch.zeros(1, 2, 3, 3)
    save_file(sd, tmp_path / "shape.safetensors", metadata=meta)
    with pytest.raises(
        CheckpointError, match=r"shape.safetensors: key 'conv_in.weight' expected shape \(8, 3, 3, 3\), found \(1, 2, 3, 3\)"
    ):
        load_stage(tmp_path / "shape.safetensors")
    del sd[key]
    save_file(sd, tmp_path / "missing.safetensors", metadata=meta)
    with pytest.raises(CheckpointError, match="1 missing .*conv_in.weight"):
        load_stage(tmp_path / "missing.safetensors")
    sd = {k: v.clone() for k, v in stage.net.state_dict().items()}
    sd[key][0, 0, 0, 0] = float("nan")
    save_file(sd, tmp_path / "nan.safetensors", metadata=meta)
    with pytest.raises(CheckpointError, match="NaN"):
        load_stage(tmp_path / "nan.safetensors")


def test_safetensors_without_stage_metadata(tmp_path):
    save_file({"a": torch.zeros(2)}, tmp_path / "other.safetensors")
    with pytest.raises(CheckpointError, match="not an Imagen Video stage"):
        read_stage_config(tmp_path / "other.safetensors")


def test_newer_format_and_bad_config(tmp_path):
    stage = tiny_stage("base")
    sd = stage.net.state_dict()
    save_file(
        sd,
        tmp_path / "new.safetensors",
        metadata={"format": "imagen-video-stage", "format_version": "99", "config": stage.config.to_json()},
    )
    with pytest.raises(CheckpointError, match="Update the pack"):
        read_stage_config(tmp_path / "new.safetensors")
    bad = json.loads(stage.config.to_json())
    bad["role"] = "vae"
    save_file(
        sd,
        tmp_path / "bad.safetensors",
        metadata={"format": "imagen-video-stage", "format_version": "1", "config": json.dumps(bad)},
    )
    with pytest.raises(CheckpointError, match="Unknown stage role"):
        read_stage_config(tmp_path / "bad.safetensors")
