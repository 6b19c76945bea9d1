"""Backbone table: shapes, published parameter counts, weights loading and its errors."""
from __future__ import annotations

import re

import pytest
import timm
import torch
import torch.nn.functional as F

from cape_bench.errors import (
    CheckpointError,
    ConfigError,
    RegistryError,
    WeightsMissingError,
)
from cape_bench.nn.backbones import WEIGHTS_ENV, build_backbone, list_backbones

# A SwinV2 small enough for CPU tests that still has 4 stages ending in an 8x8 map at 256 input.
SMALL_SWIN = dict(embed_dim=24, depths=(1, 1, 1, 1), num_heads=(1, 2, 3, 6))


def _n_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _to_upstream_layout(timm_state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """timm SwinV2 keys -> Microsoft/upstream keys (PatchMerging at the end of a stage, `head.`)."""
    out = {}
    for key, value in timm_state.items():
        key = re.sub(r"layers\.(\d+)\.downsample", lambda m: f"layers.{int(m.group(1)) - 1}.downsample", key)
        out[key.replace("head.fc.", "head.")] = value
    return out


def test_tiny_returns_stride_16_map():
    backbone = build_backbone("tiny").eval()
    with torch.no_grad():
        features = backbone(torch.randn(2, 3, 256, 256))
    assert features.shape == (2, backbone.out_channels, 16, 16)
    assert backbone.out_channels == 192
    assert backbone.input_size == (256, 256)
    assert backbone.feature_size == (256 // backbone.stride, 256 // backbone.stride) == (16, 16)


def test_tiny_cnn_is_the_demo_backbone_at_128_px():
    backbone = build_backbone("tiny_cnn").eval()
    with torch.no_grad():
        features = backbone(torch.randn(2, 3, 128, 128))
    assert features.shape == (2, 64, 8, 8)
    assert backbone.input_size == (128, 128)
    with pytest.raises(ConfigError, match="multiple of 16"):
        build_backbone("tiny_cnn", img_size=120)


@pytest.mark.parametrize("name", list_backbones())
def test_every_backbone_builds_on_meta_with_its_declared_shape(name):
    with torch.device("meta"):
        backbone = build_backbone(name)  # meta needs no weights
        features = backbone(torch.empty(2, 3, *backbone.input_size))
    assert features.device.type == "meta"
    h, w = backbone.input_size
    assert features.shape == (2, backbone.out_channels, h // 16, w // 16)


def test_swinv2_parameter_counts_match_upstream():
    # reference/upstream_state_dicts/counts.json: graphcape total_params 58,742,312
    # = 'backbone' 49,728,418 + 'keypoint_head' 9,013,894, so 'backbone' includes the unused
    # ImageNet classifier 'backbone.head' (769,000). capex (SwinV2-T): 'backbone' 28,347,154.
    with torch.device("meta"):
        small = build_backbone("swinv2_small")
        tiny = build_backbone("swinv2_tiny")
    assert _n_params(small) == 49_728_418
    assert _n_params(small.model.head) == 769_000
    assert _n_params(tiny) == 28_347_154
    assert _n_params(tiny.model.head) == 769_000


def test_swinv2_upsamples_the_normed_final_stage():
    backbone = build_backbone("swinv2_tiny", random_init=True, **SMALL_SWIN).eval()
    images = torch.randn(2, 3, 256, 256)
    with torch.no_grad():
        features = backbone(images)
        final = backbone.model.norm(backbone.model.layers(backbone.model.patch_embed(images)))
    assert final.shape == (2, 8, 8, 192)
    expected = F.interpolate(final.permute(0, 3, 1, 2), scale_factor=2, mode="bilinear", align_corners=False)
    assert features.shape == (2, 192, 16, 16)
    torch.testing.assert_close(features, expected)


def test_swinv2_geometry_follows_upstream():
    backbone = build_backbone("swinv2_small", random_init=True)
    assert backbone.upsample == 2
    # stages 3 and 4 (16x16 and 8x8 tokens) are one unshifted window each: no attention mask
    stage3, stage4 = backbone.model.layers[2], backbone.model.layers[3]
    assert stage3.blocks[1].window_size == (16, 16) and stage3.blocks[1].attn_mask is None
    assert stage4.blocks[1].window_size == (8, 8) and stage4.blocks[1].attn_mask is None
    assert backbone.model.layers[0].blocks[1].shift_size == (8, 8)
    # residual post-norms start at (1, 0) as in upstream's init, not timm's zeros
    block = backbone.model.layers[1].blocks[0]
    assert torch.all(block.norm1.weight == 1) and torch.all(block.norm2.bias == 0)


def test_missing_weights_names_the_file_and_where_to_put_it():
    with pytest.raises(WeightsMissingError) as caught:
        build_backbone("swinv2_tiny")
    message = str(caught.value)
    assert "swinv2_tiny_patch4_window16_256.pth" in message
    assert "--backbone-weights" in message and WEIGHTS_ENV in message
    with pytest.raises(WeightsMissingError, match="swinv2_small_patch4_window16_256.pth"):
        build_backbone("swinv2_small")


def test_random_init_needs_no_weights():
    backbone = build_backbone("swinv2_tiny", random_init=True, **SMALL_SWIN)
    assert backbone.out_channels == 192


def test_weights_and_random_init_are_exclusive(tmp_path):
    with pytest.raises(ConfigError):
        build_backbone("tiny", weights=tmp_path / "w.pth", random_init=True)


def test_weights_file_that_does_not_exist(tmp_path):
    with pytest.raises(WeightsMissingError, match="swinv2_tiny_patch4_window16_256.pth"):
        build_backbone("swinv2_tiny", weights=tmp_path / "nope.pth", **SMALL_SWIN)


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_state_dict_file_round_trips(tmp_path, suffix):
    source = build_backbone("swinv2_tiny", random_init=True, **SMALL_SWIN).eval()
    path = tmp_path / f"weights{suffix}"
    state = {k: v.contiguous() for k, v in source.model.state_dict().items()}
    if suffix == ".safetensors":
        from safetensors.torch import save_file
        save_file(state, str(path))
    else:
        torch.save(state, path)
    loaded = build_backbone("swinv2_tiny", weights=path, **SMALL_SWIN).eval()
    images = torch.randn(1, 3, 256, 256)
    with torch.no_grad():
        torch.testing.assert_close(loaded(images), source(images), rtol=0, atol=0)


def test_upstream_checkpoint_layout_loads(tmp_path):
    """An mmcv-style whole-model checkpoint with the backbone in Microsoft's layout under `backbone.`."""
    source = build_backbone("swinv2_tiny", random_init=True, **SMALL_SWIN).eval()
    state = {f"backbone.{k}": v for k, v in _to_upstream_layout(source.model.state_dict()).items()}
    state["backbone.layers.0.blocks.0.attn.relative_position_index"] = torch.zeros(64, 64, dtype=torch.long)
    state["keypoint_head.query_proj.weight"] = torch.zeros(256, 192)
    path = tmp_path / "cape.pth"
    torch.save({"meta": {"epoch": 200}, "state_dict": state}, path)
    loaded = build_backbone("swinv2_tiny", weights=path, **SMALL_SWIN).eval()
    images = torch.randn(1, 3, 256, 256)
    with torch.no_grad():
        torch.testing.assert_close(loaded(images), source(images), rtol=0, atol=0)


def test_weights_found_in_the_weights_folder(tmp_path, monkeypatch):
    source = build_backbone("swinv2_tiny", random_init=True, **SMALL_SWIN)
    torch.save({"model": _to_upstream_layout(source.model.state_dict())},
               tmp_path / "swinv2_tiny_patch4_window16_256.pth")
    monkeypatch.setenv(WEIGHTS_ENV, str(tmp_path))
    loaded = build_backbone("swinv2_tiny", **SMALL_SWIN)
    torch.testing.assert_close(loaded.model.norm.weight, source.model.norm.weight)


def test_mismatched_file_lists_missing_and_unexpected_keys(tmp_path):
    source = build_backbone("swinv2_tiny", random_init=True, **SMALL_SWIN)
    state = source.model.state_dict()
    state["extra.weight"] = torch.zeros(3)
    path = tmp_path / "other.pth"
    torch.save(state, path)
    deeper = dict(SMALL_SWIN, depths=(1, 1, 2, 1))
    with pytest.raises(CheckpointError) as caught:
        build_backbone("swinv2_tiny", weights=path, **deeper)
    message = str(caught.value)
    assert str(path) in message
    assert "missing" in message and "layers.2.*" in message and "blocks.1.attn" in message
    assert "unexpected" in message and "extra" in message


def test_shape_mismatch_is_reported(tmp_path):
    source = build_backbone("swinv2_tiny", random_init=True, **SMALL_SWIN)
    path = tmp_path / "narrow.pth"
    torch.save(source.model.state_dict(), path)
    wider = dict(SMALL_SWIN, embed_dim=48)
    with pytest.raises(CheckpointError, match=r"shape mismatch.*file \[24\] vs model \[48\]"):
        build_backbone("swinv2_tiny", weights=path, **wider)


def test_truncated_cnn_drops_the_classifier_layers_of_a_full_checkpoint(tmp_path):
    full = timm.create_model("resnet50", pretrained=False)
    path = tmp_path / "resnet50.pth"
    torch.save(full.state_dict(), path)
    backbone = build_backbone("resnet50", weights=path).eval()
    torch.testing.assert_close(backbone.model.layer3[0].conv1.weight, full.layer3[0].conv1.weight)
    with torch.no_grad():
        assert backbone(torch.randn(1, 3, 256, 256)).shape == (1, 1024, 16, 16)


def test_dinov2_resizes_256_to_224():
    backbone = build_backbone("dinov2_vits14", random_init=True, depth=1).eval()
    assert backbone.input_size == (256, 256) and backbone.resize_to == (224, 224)
    with torch.no_grad():
        assert backbone(torch.randn(1, 3, 256, 256)).shape == (1, 384, 16, 16)


def test_weights_timm_without_cache_fails_offline(monkeypatch, tmp_path):
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "try_to_load_from_cache", lambda *a, **k: None)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    with pytest.raises(WeightsMissingError, match="offline cache"):
        build_backbone("swinv2_tiny", weights="timm", **SMALL_SWIN)


def test_image_size_the_backbone_cannot_take():
    with pytest.raises(ConfigError, match="divisible by 32"):
        build_backbone("swinv2_tiny", random_init=True, img_size=240)
    with pytest.raises(ConfigError, match="window_size 16"):
        build_backbone("swinv2_tiny", random_init=True, img_size=320)
    with pytest.raises(ConfigError, match="resize_to"):
        build_backbone("dinov2_vits14", random_init=True, img_size=512)
    with pytest.raises(ConfigError, match=r"\[B, 3, 256, 256\]"):
        build_backbone("tiny")(torch.zeros(1, 3, 224, 224))


def test_unknown_name_and_override():
    with pytest.raises(RegistryError, match="swinv2_tiny"):
        build_backbone("swinv2-tiny")
    with pytest.raises(ConfigError, match="no setting depth"):
        build_backbone("tiny", depth=3)
    with pytest.raises(ConfigError, match="num_heads"):
        build_backbone("tiny", num_heads=(1, 2, 3))
