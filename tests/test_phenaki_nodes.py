"""The Phenaki nodes executed directly (no ComfyUI installed): loader, sampler with continuation,
story, their errors, and that their IMAGE output feeds the Imagen Video TSR node."""

import pytest
import torch
from packimport import load_pack

pack = load_pack()
M = pack.NODE_CLASS_MAPPINGS
adapter = pack.nodes.adapter


@pytest.fixture(scope="module")
def phenaki_dir(tmp_path_factory):
    from imagen_video_pack.cascade.cvivit import CViViT, CViViTConfig
    from imagen_video_pack.cascade.maskgit import MaskGIT, MaskGITConfig
    from imagen_video_pack.cascade.phenaki import PhenakiInfo, save_tokenizer, save_transformer
    from imagen_video_pack.cascade.text import DEFAULT_ENCODER

    root = tmp_path_factory.mktemp("models")
    tok_cfg = CViViTConfig(
        image_size=16, patch_size=4, temporal_patch=2, dim=32, spatial_depth=1, temporal_depth=1, head_dim=16, ff_mult=2
    )
    g = torch.Generator().manual_seed(0)
    tok = CViViT(tok_cfg)
    tf = MaskGIT(
        MaskGITConfig(codebook_size=tok_cfg.codebook_size, grid=tok_cfg.grid, dim=32, depth=1, head_dim=16, text_dim=384)
    )
    with torch.no_grad():
        for p in [*tok.parameters(), *tf.parameters()]:
            p.copy_(torch.randn(p.shape, generator=g) * 0.2)
    tid = save_tokenizer(root / "phenaki" / "tok.safetensors", tok)
    info = PhenakiInfo(tokenizer_id=tid, tokenizer_config=tok_cfg, text_encoder=DEFAULT_ENCODER, fps=4.0, steps=3)
    save_transformer(root / "phenaki" / "tf.safetensors", tf, info)
    other = CViViT(tok_cfg)
    save_tokenizer(root / "phenaki" / "other_tok.safetensors", other)
    old = adapter.PACK_MODELS
    adapter.PACK_MODELS = root
    yield root
    adapter.PACK_MODELS = old


@pytest.fixture(scope="module")
def text():
    enc = M["ImagenVideoTextEncoderLoader"]().load("all-MiniLM-L6-v2 (embedded)")[0]
    return enc, M["ImagenVideoTextEncode"]().encode(enc, "a red circle moving right quickly")[0]


def test_loader_lists_and_refuses_a_wrong_pair(phenaki_dir):
    names = M["ImagenVideoPhenakiLoader"].INPUT_TYPES()["required"]["tokenizer"][0]
    assert {"tok.safetensors", "tf.safetensors"} <= set(names)
    assert M["ImagenVideoPhenakiLoader"]().load("tok.safetensors", "tf.safetensors")[0].phenaki is not None
    with pytest.raises(ValueError, match="another tokenizer"):
        M["ImagenVideoPhenakiLoader"]().load("other_tok.safetensors", "tf.safetensors")
    with pytest.raises(FileNotFoundError, match="models/phenaki"):
        M["ImagenVideoPhenakiLoader"]().load("missing.safetensors", "tf.safetensors")


def test_sampler_continuation_story_and_tsr(phenaki_dir, text):
    enc, cond = text
    ph = M["ImagenVideoPhenakiLoader"]().load("tok.safetensors", "tf.safetensors")[0]
    node = M["ImagenVideoPhenakiSampler"]()
    r = node.sample(ph, cond, 5, 2, 1.0, 1.0, 7)
    images, fps = r["result"]
    assert images.shape == (5, 16, 16, 3) and fps == 4.0 and r["ui"]["imagen_video_info"][0]["frames"] == 5
    again = node.sample(ph, cond, 5, 2, 1.0, 1.0, 7, show_animation=False)["result"][0]
    assert torch.equal(images, again)  # same seed, same video
    more = node.sample(ph, cond, 4, 2, 1.0, 1.0, 7, context_images=images, context_frames=3)["result"][0]
    assert more.shape == (4, 16, 16, 3)
    with pytest.raises(ValueError, match="1 \\+ n \\* 2 frames"):
        node.sample(ph, cond, 4, 2, 1.0, 1.0, 7)
    with pytest.raises(ValueError, match="resize them first"):
        node.sample(ph, cond, 4, 2, 1.0, 1.0, 7, context_images=torch.zeros(5, 8, 8, 3), context_frames=3)
    story = M["ImagenVideoPhenakiStory"]().story(ph, enc, "a red circle | 2s\na blue square | 1s", 4.0, 2, 1.0, 3, 0)
    assert story["result"][0].shape[0] == 12 and story["result"][1] == 4.0
    # its output is a base's: the Imagen Video TSR takes it (a tiny random TSR stage)
    from test_distill_eval import minilm_stage

    (phenaki_dir / "imagen_video").mkdir(exist_ok=True)
    minilm_stage("tsr").save(phenaki_dir / "imagen_video" / "tsr.safetensors")
    tsr = M["ImagenVideoModelLoader"]().load("tsr.safetensors")[0]
    out = M["ImagenVideoTemporalSR"]().interpolate(tsr, images, fps, cond, 2, "imagen", 0.3, 0, 2, 1.0)["result"]
    assert out[0].shape[0] == 10 and out[1] == 8.0


def test_the_story_node_the_command_line_and_the_library_share_one_context_default():
    import argparse

    from cascade.cli import add_story
    from cascade.phenaki import PhenakiOptions

    node = load_pack().NODE_CLASS_MAPPINGS["ImagenVideoPhenakiStory"].INPUT_TYPES()["required"]["context_frames"][1]["default"]
    parser = argparse.ArgumentParser()
    add_story(parser.add_subparsers(dest="command"))
    cli = parser.parse_args(["story", "--base", "phenaki", "story.txt", "-o", "out.mp4"]).phenaki_context
    assert node == cli == PhenakiOptions().context == 5
