"""The stage-role seam: a new kind of stage is one Role subclass plus its registration.

The toy role here ("restore": a same-size video-to-video stage conditioned on a degraded copy of
the clip) is registered, configured, trained, saved, loaded, described and sampled without any
change to the library: the configuration checks, training batches, conditioning, the stage-file
round trip and the sampling core all go through the role."""

import pytest
import torch
from helpers import tiny_unet
from test_train import TinyEncoder

from cascade.conditioning import resize_video
from cascade.config import StageConfig
from cascade.pipeline import SamplingOptions, transform, upsample
from cascade.roles import Role, get_role, output_fps, register_role, role_names, unregister_role
from cascade.stage import load_stage
from cascade.train import TrainConfig, Trainer, build_batch


class RestoreRole(Role):
    name = "restore"
    title = "video restoration"

    def cond_channels(self, cfg):
        return 3

    def describe(self, cfg):
        return "restore"

    def training_inputs(self, tcfg, x, rng):
        h, w = x.shape[-2:]  # a blurred copy: down and up by 2
        low = resize_video(resize_video(x, (h // 2, w // 2)), (h, w))
        return {"low": low, "size": (h, w)}

    def condition(self, cfg, inputs, aug_logsnr, augment):
        self.calls = getattr(self, "calls", 0) + 1
        return {"cond": augment(resize_video(inputs["low"], inputs["size"])), "aug_logsnr": aug_logsnr}


@pytest.fixture
def restore_role():
    role = register_role(RestoreRole())
    yield role
    unregister_role("restore")


def restore_cfg(**kw):
    return StageConfig(
        role="restore",
        unet=tiny_unet(cond_channels=3, aug_cond=True),
        frames=4,
        height=8,
        width=8,
        text_dim=8,
        text_encoder="tiny-hash-encoder",
        **kw,
    )


def test_a_registered_role_trains_saves_loads_and_samples_end_to_end(tmp_path, restore_role):
    assert "restore" in role_names()
    cfg = restore_cfg()
    assert cfg.describe().startswith("restore (4f 8x8")
    with pytest.raises(ValueError, match="restore stage needs unet.cond_channels=3"):
        StageConfig(role="restore", unet=tiny_unet(cond_channels=4, aug_cond=True), text_dim=8, height=8, width=8)

    tcfg = TrainConfig(stage=cfg, out=str(tmp_path / "run"), steps=3, batch=2, lr=1e-3, warmup=1, checkpoint_every=0)
    tr = Trainer(tcfg, encoder=TinyEncoder())
    batch = build_batch(tcfg, tr.source, 0, 2)
    assert batch["low"].shape == batch["x"].shape  # the role built the input of the batch
    calls = restore_role.calls if hasattr(restore_role, "calls") else 0
    tr.run()
    assert restore_role.calls > calls  # training conditioned through the role

    stage = load_stage(tmp_path / "run" / "stage.safetensors")
    assert stage.role == "restore" and stage.config.describe().startswith("restore")
    video = torch.rand(1, 3, 5, 8, 8) * 2 - 1
    text = TinyEncoder().encode(["a red circle moving right"])
    opts = SamplingOptions(steps=3, guidance=1.0, seed=2)
    out = transform(stage, video, text, options=opts)
    assert out.shape == video.shape and torch.isfinite(out).all()
    assert torch.equal(out, upsample(stage, video, text, options=opts))  # the generic entry dispatches to it
    assert output_fps(stage.config, 8.0) == 8.0


def test_unknown_roles_and_duplicates_are_refused(restore_role):
    with pytest.raises(ValueError, match="Unknown stage role 'colourise'"):
        StageConfig(role="colourise", unet=tiny_unet(), text_dim=8)
    with pytest.raises(ValueError, match="already registered"):
        register_role(RestoreRole())
    with pytest.raises(ValueError, match="identifier"):
        register_role(type("Bad", (Role,), {"name": "no name"})())
    assert (
        get_role("tsr").describe(
            StageConfig(role="tsr", unet=tiny_unet(cond_channels=4, aug_cond=True), text_dim=8, temporal_factor=4)
        )
        == "TSR x4"
    )


def test_output_fps_is_the_roles_rule():
    tsr = StageConfig(role="tsr", unet=tiny_unet(cond_channels=4, aug_cond=True), text_dim=8, temporal_factor=2)
    ssr = StageConfig(role="ssr", unet=tiny_unet(cond_channels=3, aug_cond=True), text_dim=8, spatial_factor=2.0)
    assert output_fps(tsr, 4.0) == 8.0 and output_fps(tsr, 4.0, 4) == 16.0 and output_fps(ssr, 8.0) == 8.0
    with pytest.raises(ValueError, match="fps must be a positive number"):
        output_fps(tsr, 0)


def test_describe_names_the_student_step_counts_in_words():
    from cascade.config import DistillationInfo

    unet = tiny_unet(cond_channels=4, aug_cond=True, guidance_cond=True)
    cfg = StageConfig(role="tsr", unet=unet, text_dim=8, height=8, width=8, temporal_factor=2)
    assert "distilled" not in cfg.describe()
    assert cfg.replace(distillation=DistillationInfo(steps=(1,))).describe().endswith(", distilled to 1 step)")
    assert cfg.replace(distillation=DistillationInfo(steps=(2,))).describe().endswith(", distilled to 2 steps)")
    assert cfg.replace(distillation=DistillationInfo(steps=(4, 2))).describe().endswith(", distilled to 4/2 steps)")
