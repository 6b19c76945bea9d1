"""Official GraphCape / CapeX / CapeNext checkpoints: detection, key maps, conversion, parity, errors.

The upstream key -> shape manifests live in ``fixtures/upstream/manifests.json.gz`` (made once
by ``make_manifests.py``). Full-size checks run on the meta device (no memory); reduced sizes
are built on CPU with random weights, written in the upstream layout by the inverse map and
checked to follow the manifests' key patterns, then loaded back through detection.
"""
from __future__ import annotations

import gzip
import json
import math
import re
from functools import cache
from pathlib import Path

import pytest
import torch
from torch import nn

from cape_bench.build import build_method
from cape_bench.checkpoints import load_checkpoint
from cape_bench.errors import CheckpointError, WeightsMissingError
from cape_bench.method import CapeBatch, PairBatch, QueryBatch, SupportBatch
from cape_bench.nn.backbones import build_backbone
from cape_bench.nn.embedding_cache import EmbeddingCache
from cape_bench.registry import METHODS
from cape_bench.upstream import (
    UPSTREAM_VARIANTS,
    convert_command,
    detect_state_dict,
    detect_upstream,
    head_output,
    load_method,
    load_upstream,
    plan_checkpoint,
    put_text_embeddings,
    query_from_embeddings,
    support_from_embeddings,
    to_upstream_state_dict,
)

FIXTURE = Path(__file__).parent / "fixtures" / "upstream" / "manifests.json.gz"
CAPENEXT_INSTALLED = "capenext" in METHODS.names()

# manifest -> (published variant, cape-bench method, config)
EXPECTED = {
    "graphcape": ("graphcape-s", "graphcape", "graphcape_s"),
    "capex": ("capex", "capex", "capex"),
    "capex_s": ("capex-s", "capex", "capex_s"),
    "capex_clip": ("capex-clip", "capex", "capex_clip"),
    "capenext": ("capenext", "capenext", None),
}

# Two reduced sizes, as --cfg-options on the published configs, on 64 and 128 px crops (detection reads
# the image size off the attention masks) to keep the tests fast. Attention-head counts that a state dict cannot record follow the
# rules detection uses (gte and CLIP: width / 64, at least 1).
SMALL_A = {
    "input_size": 64, "backbone_options.img_size": 64, "backbone_options.embed_dim": 16, "backbone_options.depths": [2, 2, 2, 2],
    "backbone_options.num_heads": [1, 2, 2, 4], "backbone_options.window_size": 8,
    "backbone_options.num_classes": 10,
    "head.d_model": 32, "head.num_encoder_layers": 2, "head.num_decoder_layers": 2, "head.dim_feedforward": 48,
    "head.similarity_proj_dim": 32, "head.dynamic_proj_dim": 16,
}
SMALL_B = {
    "input_size": 128, "backbone_options.img_size": 128, "backbone_options.embed_dim": 16, "backbone_options.depths": [2, 2, 4, 2],
    "backbone_options.num_heads": [2, 2, 4, 4], "backbone_options.window_size": 16,
    "head.d_model": 64, "head.num_encoder_layers": 3, "head.num_decoder_layers": 1, "head.dim_feedforward": 96,
    "head.similarity_proj_dim": 64, "head.dynamic_proj_dim": 32,
}
GTE_A = dict(vocab_size=30528, hidden_size=64, num_hidden_layers=2, num_attention_heads=1, intermediate_size=96,
             type_vocab_size=0)
GTE_B = dict(vocab_size=30528, hidden_size=128, num_hidden_layers=1, num_attention_heads=2, intermediate_size=80,
             type_vocab_size=0)
CLIP_A = dict(embed_dim=32, quick_gelu=True, vision_cfg=dict(image_size=224, layers=2, width=64, patch_size=32),
              text_cfg=dict(context_length=77, vocab_size=49408, width=64, heads=1, layers=2))
CLIP_B = dict(embed_dim=48, quick_gelu=True, vision_cfg=dict(image_size=64, layers=1, width=128, patch_size=16),
              text_cfg=dict(context_length=77, vocab_size=49408, width=128, heads=2, layers=1))

# Upstream's fusion FFN is 4 x the CLIP width (AttentionLayer and the *_ffn blocks).
REDUCED = {
    "graphcape-a": ("graphcape", "graphcape_s", SMALL_A),
    "graphcape-b": ("graphcape", "graphcape_t", SMALL_B),
    "capex-gte-a": ("capex", "capex", {**SMALL_A, "text_encoder_options.config": GTE_A}),
    "capex-gte-b": ("capex", "capex_s", {**SMALL_B, "text_encoder_options.config": GTE_B}),
    "capex-clip-a": ("capex", "capex_clip", {**SMALL_A, "text_encoder_options.model_cfg": CLIP_A}),
    "capex-clip-b": ("capex", "capex_clip", {**SMALL_B, "text_encoder_options.model_cfg": CLIP_B}),
    "capenext-a": ("capenext", "capenext", {**SMALL_A, "text_encoder_options.model_cfg": CLIP_A, "fusion.ffn_dim": 128}),
    "capenext-b": ("capenext", "capenext", {**SMALL_B, "text_encoder_options.model_cfg": CLIP_B, "fusion.ffn_dim": 192}),
}
if not CAPENEXT_INSTALLED:
    REDUCED = {k: v for k, v in REDUCED.items() if not k.startswith("capenext")}
# The manifest whose key patterns each reduced size must follow.
PATTERN_SOURCE = {"graphcape": "graphcape", "capex-gte": "capex", "capex-clip": "capex_clip", "capenext": "capenext"}

DESCRIPTIONS = ["nose", "left eye", "right eye", "left ear", "right ear", "neck", "tail base", "tail tip",
                "left front paw", "right front paw"]


@cache
def manifests() -> dict:
    with gzip.open(FIXTURE, "rt") as handle:
        return json.load(handle)["models"]


def meta_state(name: str) -> dict[str, torch.Tensor]:
    return {k: torch.empty(v, device="meta") for k, v in manifests()[name]["keys"].items()}


def pattern(key: str) -> str:
    """A key with its layer/block indices collapsed: the shape of the naming, not the depth."""
    return re.sub(r"\.\d+(?=\.|$)", ".N", key)


def rerandomise(module: nn.Module, seed: int) -> None:
    """Re-draw every parameter: normal(0, 0.02), LayerNorm weights 1 + normal(0, 0.02) (UPSTREAM_ARCH §5)."""
    gen = torch.Generator().manual_seed(seed)
    norm_weights = {id(m.weight) for m in module.modules() if isinstance(m, nn.LayerNorm) and m.weight is not None}
    with torch.no_grad():
        for param in module.parameters():
            noise = torch.randn(param.shape, generator=gen) * 0.02
            param.copy_(noise + 1.0 if id(param) in norm_weights else noise)


def build_reduced(name: str, seed: int = 0):
    method_name, config, overrides = REDUCED[name]
    torch.manual_seed(seed)
    method, resolved = build_method(method_name, config, {**overrides, "random_init": True})
    rerandomise(method, seed)
    return method.eval(), resolved


@cache
def reduced_case(name: str, seed: int = 0):
    """(method, resolved config, upstream-layout state dict, batch, outputs), built once per session.

    Tests must not modify the cached objects.
    """
    method, resolved = build_reduced(name, seed)
    batch = make_batch(method)
    return method, resolved, to_upstream_state_dict(method), batch, outputs(method, batch)


def make_batch(method, num_kpt: int = 7, batch: int = 2, seed: int = 0) -> CapeBatch:
    gen = torch.Generator().manual_seed(seed)
    size = method.input_size
    visible = torch.rand(batch, 1, num_kpt, generator=gen) > 0.3
    visible[:, :, :2] = True
    skeletons = [[(i, i + 1) for i in range(num_kpt - 1)] + [(0, num_kpt - 1)], [(0, 2), (2, 4), (1, 3)]][:batch]
    support = SupportBatch(
        images=torch.randn(batch, 1, 3, size, size, generator=gen) if "image" in method.support_kinds else None,
        keypoints=torch.rand(batch, 1, num_kpt, 2, generator=gen) * 0.8 + 0.1, visible=visible,
        keypoint_texts=[DESCRIPTIONS[:num_kpt]] * batch, skeletons=skeletons, category_ids=[3] * batch)
    return CapeBatch(query=QueryBatch(torch.randn(batch, 3, size, size, generator=gen), [3] * batch), support=support,
                     pairs=PairBatch(visible[:, 0], skeletons, ["zebra body"] * batch))


def outputs(method, batch: CapeBatch):
    """Every tensor upstream exposes: similarity map, both proposals, every decoder layer."""
    with torch.no_grad():
        out = head_output(method, method.encode_query(batch.query), method.encode_support(batch.support), batch.pairs)
    return {"similarity_map": out.similarity_map, "proposals_for_loss": out.proposals_for_loss,
            "proposals": out.proposals, "layer_outputs": out.layer_outputs}


def assert_same_outputs(a: dict, b: dict) -> None:
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0, msg=key)


def write_mmcv(path: Path, state: dict[str, torch.Tensor]) -> Path:
    torch.save({"meta": {"epoch": 200, "config": "model = dict(...)"}, "state_dict": state,
                "optimizer": {"state": {}, "param_groups": []}}, path)
    return path


# ----------------------------------------------------------------------------- full-size manifests


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_manifest_is_detected(name):
    variant, method, config = EXPECTED[name]
    detection = detect_state_dict(meta_state(name), name)
    assert (detection.variant, detection.method, detection.family) == (variant, method, UPSTREAM_VARIANTS[variant].family)
    if config is not None:
        assert detection.config == config
    assert detection.overrides == {}
    assert detection.label == UPSTREAM_VARIANTS[variant].label


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_full_size_manifest_loads_strictly_on_meta(name):
    if name == "capenext" and not CAPENEXT_INSTALLED:
        pytest.skip("the capenext method is not registered yet (its mapping is tested with a stand-in below)")
    detection = detect_state_dict(meta_state(name), name)
    with torch.device("meta"):
        method, _ = build_method(detection.method, detection.config, {"random_init": True})
    report = load_upstream(method, meta_state(name), detection)
    manifest = manifests()[name]
    # Every upstream key is loaded, verified (SwinV2 buffers) or ignored with a reason.
    assert report.loaded + len(report.verified) + len(report.ignored) == manifest["state_dict_entries"]
    assert all(report.ignored.values())
    assert report.loaded == len(method.state_dict())  # and no cape-bench tensor is left out (strict)
    assert all(k.endswith(("relative_coords_table", "relative_position_index", "attn_mask")) for k in report.verified)
    ignored_roots = {k.split(".")[1] for k in report.ignored}
    assert ignored_roots <= {"non_linear"}
    # The published parameter counts include the unused classifier and the frozen towers: all are held.
    assert sum(p.numel() for p in method.parameters()) == manifest["total_params"]


class _FusionStandIn(nn.Module):
    """Parameters at the names of the CapeNext fusion module (without the dead `non_linear`)."""

    def __init__(self, shapes: dict[str, list[int]]):
        super().__init__()
        for key, shape in shapes.items():
            owner: nn.Module = self
            *path, leaf = key.split(".")
            for part in path:
                if not hasattr(owner, part):
                    owner.add_module(part, nn.Module())
                owner = getattr(owner, part)
            owner.register_parameter(leaf, nn.Parameter(torch.empty(shape)))


def test_capenext_keys_map_onto_clip_towers_head_and_fusion_module():
    """CapeNext = CapeX-clip + `additional_module`: CLIP (image tower too) onto open_clip, fusion by name."""
    manifest = manifests()["capenext"]["keys"]
    fusion = {k[len("additional_module."):]: v for k, v in manifest.items()
              if k.startswith("additional_module.") and ".non_linear." not in k}
    with torch.device("meta"):
        method, _ = build_method("capex", "capex_clip", {"random_init": True})
        method.additional_module = _FusionStandIn(fusion)
    detection = detect_state_dict(meta_state("capenext"), "capenext")
    report = load_upstream(method, meta_state("capenext"), detection)
    assert sorted(report.ignored) == sorted(k for k in manifest if k.startswith("additional_module.non_linear."))
    assert "never called" in next(iter(report.ignored.values()))
    assert any(k.startswith("text_backbone.model.visual.") for k in method.state_dict())
    assert report.loaded + len(report.verified) + len(report.ignored) == len(manifest)


def test_capenext_checkpoint_into_a_method_without_fusion_module_says_so():
    with torch.device("meta"):
        method, _ = build_method("capex", "capex_clip", {"random_init": True})
    with pytest.raises(CheckpointError, match="CapeNext checkpoint .*no fusion module"):
        load_upstream(method, meta_state("capenext"))


def test_swinv2_buffers_equal_microsofts_formulas():
    """The buffers upstream stores are rebuilt by timm with the same values (UPSTREAM_ARCH §1), written
    here from the description: table normalised by (window - 1), x8, sign*log2(|x|+1)/log2(8);
    index = (dy + w - 1) * (2w - 1) + (dx + w - 1); shifted-window mask of -100 between regions."""
    backbone = build_backbone("swinv2_tiny", random_init=True)
    upstream = {k: v for k, v in to_upstream_state_dict(_Holder(backbone)).items()}
    checked = 0
    for i, stage in enumerate(backbone.model.layers):
        res = 64 // 2 ** i
        for j in range(len(stage.blocks)):
            w = min(16, res)
            table, index = _ms_tables(w)
            prefix = f"backbone.layers.{i}.blocks.{j}."
            torch.testing.assert_close(upstream[prefix + "attn.relative_coords_table"], table, rtol=0, atol=1e-6)
            assert torch.equal(upstream[prefix + "attn.relative_position_index"], index)
            shift = 0 if res <= 16 else (8 if j % 2 else 0)
            if shift:
                assert torch.equal(upstream[prefix + "attn_mask"], _ms_mask(res, w, shift))
                checked += 1
            else:
                assert prefix + "attn_mask" not in upstream
    assert checked == 2  # stages 1 and 2 have one shifted block each; 3 and 4 are single windows


class _Holder(nn.Module):
    def __init__(self, backbone):
        super().__init__()
        self.backbone = backbone


def _ms_tables(w: int) -> tuple[torch.Tensor, torch.Tensor]:
    coords = torch.arange(-(w - 1), w, dtype=torch.float32)
    table = torch.stack(torch.meshgrid(coords, coords, indexing="ij"), dim=-1)[None]
    table = table / (w - 1) * 8
    table = torch.sign(table) * torch.log2(table.abs() + 1.0) / math.log2(8)
    ys, xs = torch.meshgrid(torch.arange(w), torch.arange(w), indexing="ij")
    flat = torch.stack([ys.flatten(), xs.flatten()])
    rel = flat[:, :, None] - flat[:, None, :]
    index = (rel[0] + w - 1) * (2 * w - 1) + (rel[1] + w - 1)
    return table, index


def _ms_mask(res: int, w: int, shift: int) -> torch.Tensor:
    regions = torch.zeros(res, res)
    count = 0
    for hs in (slice(0, -w), slice(-w, -shift), slice(-shift, None)):
        for ws in (slice(0, -w), slice(-w, -shift), slice(-shift, None)):
            regions[hs, ws] = count
            count += 1
    windows = regions.view(res // w, w, res // w, w).permute(0, 2, 1, 3).reshape(-1, w * w)
    mask = windows[:, None, :] - windows[:, :, None]
    return mask.masked_fill(mask != 0, -100.0).masked_fill(mask == 0, 0.0)


def test_tampered_swin_buffer_is_refused():
    state = dict(reduced_case("graphcape-a")[2])
    state["backbone.layers.0.blocks.1.attn_mask"] = torch.zeros_like(state["backbone.layers.0.blocks.1.attn_mask"])
    fresh, _ = build_reduced("graphcape-a", seed=1)
    with pytest.raises(CheckpointError, match="SwinV2 buffers differ"):
        load_upstream(fresh, state)


# ----------------------------------------------------------------------------- reduced sizes, round trips


@pytest.mark.parametrize("name", sorted(REDUCED))
def test_reduced_sizes_follow_upstream_key_patterns_and_are_detected(name):
    method, resolved, state, _, _ = reduced_case(name)
    source = PATTERN_SOURCE[name.rsplit("-", 1)[0]]
    assert {pattern(k) for k in state} == {pattern(k) for k in manifests()[source]["keys"]}
    # Ranks agree key for key (a reduced size changes widths and depths, never the layout).
    ranks = {pattern(k): len(v) for k, v in manifests()[source]["keys"].items()}
    assert all(len(v.shape) == ranks[pattern(k)] for k, v in state.items())
    detection = detect_state_dict(state, name)
    assert detection.method == resolved["method"] and detection.variant is None
    assert "non-published size" in detection.label
    # The detected config + overrides build a model of exactly these shapes.
    with torch.device("meta"):
        rebuilt, _ = build_method(detection.method, detection.config, {**detection.overrides, "random_init": True})
    assert {k: v.shape for k, v in rebuilt.state_dict().items()} == {k: v.shape for k, v in method.state_dict().items()}


@pytest.mark.parametrize("name", sorted(REDUCED))
def test_round_trip_through_the_upstream_layout_gives_identical_weights_and_outputs(name):
    """Re-randomised weights -> upstream layout -> detected method: same tensors, same predictions
    (similarity map, proposals, every decoder layer), bit for bit."""
    method, _, state, batch, expected = reduced_case(name, 3)
    detection = detect_state_dict(state, name)
    fresh, _ = build_method(detection.method, detection.config, {**detection.overrides, "random_init": True})
    report = load_upstream(fresh.eval(), state, detection)
    assert not report.ignored and report.buffer_values_checked
    for key, value in method.state_dict().items():
        assert torch.equal(value, fresh.state_dict()[key]), key
    assert expected["layer_outputs"].std() > 0  # not the degenerate random-init "outputs = proposals"
    assert_same_outputs(expected, outputs(fresh, batch))


def test_convert_to_safetensors_and_back_gives_identical_tensors_and_predictions(tmp_path, capsys):
    method, _, state, batch, expected = reduced_case("capex-gte-a", 3)
    source = write_mmcv(tmp_path / "capex_split1.pth", state)
    assert convert_command(source, tmp_path / "converted") == 0
    written = tmp_path / "converted.safetensors"
    printed = capsys.readouterr().out
    assert "verified" in printed and str(written) in printed
    metadata = json.loads(written.with_suffix(".json").read_text())
    assert metadata["method"] == "capex" and metadata["config_name"] == "capex"
    assert metadata["overrides"]["text_encoder_options.config"] == GTE_A and "random_init" not in metadata["overrides"]
    assert metadata["source"]["file"] == "capex_split1.pth" and len(metadata["source"]["sha256"]) == 64

    detection = detect_upstream(written)
    assert detection.source == "cape-bench" and detection.method == "capex" and detection.config == "capex"
    loaded, resolved, report = load_method(written)
    assert report is None and resolved["config_name"] == "capex"
    for key, value in method.state_dict().items():
        assert torch.equal(value, loaded.state_dict()[key]), key
    assert_same_outputs(expected, outputs(loaded, batch))
    with torch.no_grad():  # the full path, text encoder included, agrees too
        torch.testing.assert_close(loaded.predict(batch), method.predict(batch), rtol=0, atol=0)


def test_convert_back_to_the_upstream_layout(tmp_path):
    source = write_mmcv(tmp_path / "graphcape.pth", reduced_case("graphcape-b", 3)[2])
    convert_command(source, tmp_path / "ours", quiet=True)
    convert_command(tmp_path / "ours.safetensors", tmp_path / "back", to_upstream=True, quiet=True)
    again = torch.load(tmp_path / "back.pth", map_location="cpu")["state_dict"]
    original = torch.load(source, map_location="cpu")["state_dict"]
    assert set(again) == set(original)
    assert all(torch.equal(again[k], original[k]) for k in original)


def test_run_plan_selects_method_and_config_from_the_file(tmp_path):
    path = write_mmcv(tmp_path / "capenext_baseline.pth", reduced_case("capex-clip-b")[2])
    plan = plan_checkpoint(path)
    assert (plan.method, plan.config) == ("capex", "capex_clip")
    assert plan.overrides["random_init"] is True
    assert plan.overrides["text_encoder_options.model_cfg"] == {**CLIP_B, "vision_cfg": {**CLIP_B["vision_cfg"]}}
    # User overrides come last; an alias of the right method is accepted.
    assert plan_checkpoint(path, method="cape-x", overrides={"head.dropout": 0.0}).overrides["head.dropout"] == 0.0


def test_loading_into_a_method_built_from_the_published_config(tmp_path):
    """`load_checkpoint` (what run/profile/predict call) maps an upstream file onto a built method."""
    _, _, state, batch, expected = reduced_case("graphcape-b", 3)
    path = write_mmcv(tmp_path / "graphcape.pth", state)
    target, _ = build_method("graphcape", "graphcape_t", {**SMALL_B, "random_init": True})
    report = load_checkpoint(target.eval(), path)
    assert report.loaded == len(target.state_dict()) and report.detection.method == "graphcape"
    assert_same_outputs(expected, outputs(target, batch))


# ----------------------------------------------------------------------------- text towers


def test_text_encoder_gets_an_id_naming_the_checkpoint_weights(tmp_path):
    path = write_mmcv(tmp_path / "clip.pth", reduced_case("capex-clip-a", 3)[2])
    first, _, report = load_method(path)
    second, _, _ = load_method(path)
    assert first.text_encoder_id == second.text_encoder_id  # same weights, same cache key
    assert "random-init" not in first.text_encoder_id and first.text_encoder_id.startswith("open_clip:upstream-")
    assert first.text_backbone.encoder_id == first.text_encoder_id
    assert any("text encoder id" in note for note in report.notes)
    third, _, _ = load_method(write_mmcv(tmp_path / "other.pth", reduced_case("capex-clip-a")[2]))
    assert third.text_encoder_id != first.text_encoder_id


def test_text_tower_of_a_method_on_precomputed_embeddings_is_listed_as_ignored(tmp_path):
    method, _, state, batch, _ = reduced_case("capex-gte-a", 3)
    cache_file = tmp_path / "rows.pt"
    cache = EmbeddingCache()
    cache.encode(method.text_backbone, DESCRIPTIONS)
    cache.save(cache_file)
    _, _, overrides = REDUCED["capex-gte-a"]
    target, _ = build_method("capex", "capex", {**overrides, "random_init": True, "text_encoder": None,
                                                "text_embeddings": str(cache_file)})
    report = load_upstream(target.eval(), state)
    text_keys = [k for k in state if k.startswith("text_backbone.")]
    assert sorted(report.ignored) == sorted(text_keys)
    assert "precomputed text embeddings" in report.ignored[text_keys[0]]
    with torch.no_grad():
        torch.testing.assert_close(target.predict(batch), method.predict(batch), rtol=0, atol=0)


# ----------------------------------------------------------------------------- encoders out of the loop


def test_precomputed_embeddings_replace_the_text_encoder(monkeypatch):
    """The parity path: given keypoint-text embeddings, the method never runs its text tower."""
    method, _, _, batch, expected = reduced_case("capex-clip-a", 3)
    with torch.no_grad():
        rows = method.text_backbone.encode(DESCRIPTIONS[:7])
    fresh, _ = build_reduced("capex-clip-a", seed=3)
    monkeypatch.setattr(fresh.text_backbone, "encode", lambda texts: pytest.fail(f"text encoder ran on {texts}"))
    put_text_embeddings(fresh, DESCRIPTIONS[:7], rows)
    assert_same_outputs(expected, outputs(fresh, batch))
    # The same through explicit encodings: support embeddings + mask, query features.
    mask = method.encode_support(batch.support).per_keypoint["mask"]
    embeddings = rows[None].expand(2, -1, -1)
    with torch.no_grad():
        out = head_output(fresh, query_from_embeddings(fresh, batch.query.images),
                          support_from_embeddings(embeddings, mask), batch.pairs)
    torch.testing.assert_close(out.layer_outputs, expected["layer_outputs"], rtol=0, atol=0)
    torch.testing.assert_close(out.proposals, expected["proposals"], rtol=0, atol=0)


@pytest.mark.skipif(not CAPENEXT_INSTALLED, reason="the capenext method is not registered")
def test_capenext_runs_on_given_keypoint_class_and_image_embeddings(monkeypatch):
    """CapeNext with all three CLIP inputs given: keypoint texts, the class prompt, the query image."""
    method, _, _, batch, expected = reduced_case("capenext-a", 3)
    with torch.no_grad():
        texts = method.text_backbone.encode(DESCRIPTIONS[:7])
        prompt = method.class_prompts(["zebra body"])[0]
        prompt_row = method.text_backbone.encode([prompt])
        image_rows = method.encode_query(batch.query).per_item["image_embedding"]
    fresh, _ = build_reduced("capenext-a", seed=3)
    monkeypatch.setattr(fresh.text_backbone, "encode", lambda texts: pytest.fail(f"text tower ran on {texts}"))
    monkeypatch.setattr(fresh.text_backbone, "encode_image", lambda images: pytest.fail("image tower ran"))
    put_text_embeddings(fresh, DESCRIPTIONS[:7] + [prompt], torch.cat([texts, prompt_row]))
    with torch.no_grad():
        out = head_output(fresh, query_from_embeddings(fresh, batch.query.images, image_embeddings=image_rows),
                          fresh.encode_support(batch.support), batch.pairs)
    for key in expected:
        torch.testing.assert_close(getattr(out, key), expected[key], rtol=0, atol=0, msg=key)


def test_query_encoding_carries_given_image_embeddings():
    method = reduced_case("capex-clip-a")[0]
    images = torch.randn(2, 3, method.input_size, method.input_size)
    given = torch.nn.functional.normalize(torch.randn(2, 32), dim=-1)
    with torch.no_grad():
        encoded = query_from_embeddings(method, images, image_embeddings=given)
        torch.testing.assert_close(encoded.per_item["features"], method.backbone(images), rtol=0, atol=0)
    assert encoded.per_item["image_embedding"] is given


# ----------------------------------------------------------------------------- errors


def test_checkpoint_of_another_method_says_what_it_looks_like(tmp_path):
    path = write_mmcv(tmp_path / "graphcape.pth", reduced_case("graphcape-a")[2])
    with pytest.raises(CheckpointError, match=r"not a capex checkpoint: it looks like GraphCape .*--method graphcape"):
        plan_checkpoint(path, method="capex")
    capex, _ = build_method("capex", "tiny")
    with pytest.raises(CheckpointError, match=r"backbone is SwinV2, but CapeX was built with backbone 'tiny_cnn'"
                                              r" .*looks like GraphCape"):
        load_checkpoint(capex, path)


def test_checkpoint_of_another_size_lists_mismatches_and_names_its_size(tmp_path):
    path = write_mmcv(tmp_path / "capex.pth", reduced_case("capex-gte-a")[2])
    with torch.device("meta"):
        full, _ = build_method("capex", "capex", {"random_init": True})
    before = {k: v for k, v in full.state_dict().items()}
    with pytest.raises(CheckpointError, match=r"shape mismatches: .*looks like CapeX at a non-published size .*"
                                              r"--cfg-options .*backbone_options.embed_dim=16"):
        load_checkpoint(full, path)
    assert all(full.state_dict()[k] is v or full.state_dict()[k].is_meta for k, v in before.items())
    with pytest.raises(CheckpointError, match=r"does not match --config capex_s: it looks like CapeX at a non-published"):
        plan_checkpoint(path, config="capex_s")


def test_published_variant_with_another_config_is_refused(tmp_path):
    path = tmp_path / "capex_s.pth"
    torch.save({"state_dict": {k: torch.zeros(v) if not k.endswith(("relative_position_index",)) else
                               torch.zeros(v, dtype=torch.long)
                               for k, v in manifests()["graphcape"]["keys"].items() if k.startswith("keypoint_head.")}},
               path)
    with pytest.raises(CheckpointError, match="not a GraphCape/CapeX/CapeNext checkpoint"):
        detect_upstream(path)


@pytest.mark.parametrize("content", [b"", b"not a checkpoint at all", b"PK\x03\x04truncated zip"])
def test_corrupt_or_foreign_bytes(tmp_path, content):
    path = tmp_path / "model.pth"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match="cannot read weights"):
        detect_upstream(path)


def test_truncated_upstream_file(tmp_path):
    path = write_mmcv(tmp_path / "graphcape.pth", reduced_case("graphcape-a")[2])
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="cannot read weights"):
        plan_checkpoint(path)


def test_state_dict_missing_part_of_the_model(tmp_path):
    full = reduced_case("graphcape-a")[2]
    state = {k: v for k, v in full.items() if not k.startswith("keypoint_head.kpt_branch.1.")}
    path = write_mmcv(tmp_path / "partial.pth", state)
    with pytest.raises(CheckpointError, match=r"kpt_branch heads for 2 decoder layers"):
        detect_upstream(path)
    state = {k: v for k, v in full.items() if k != "keypoint_head.input_proj.bias"}
    target, _ = build_reduced("graphcape-a", seed=1)
    with pytest.raises(CheckpointError, match=r"missing 1 keys: keypoint_head.input_proj.\* \(1: bias\)"):
        load_upstream(target, state)


def test_file_that_is_not_a_cape_checkpoint(tmp_path):
    path = tmp_path / "resnet.pth"
    torch.save(nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)).state_dict(), path)
    with pytest.raises(CheckpointError, match=r"not a GraphCape/CapeX/CapeNext checkpoint: .*found 7 keys under 0, 1"):
        plan_checkpoint(path)
    json_file = tmp_path / "config.json"
    json_file.write_text("{}")
    with pytest.raises(CheckpointError, match="cannot read weights"):
        detect_upstream(json_file)


def test_missing_file(tmp_path):
    with pytest.raises(WeightsMissingError, match="does not exist"):
        plan_checkpoint(tmp_path / "nope.pth")


def _stripped_capenext_file(path: Path) -> Path:
    """The CapeNext manifest as zeros, without the frozen CLIP tower (small enough to write)."""
    state = {}
    for key, shape in manifests()["capenext"]["keys"].items():
        if not key.startswith("text_backbone."):
            dtype = torch.long if key.endswith("relative_position_index") else torch.float32
            state[key] = torch.zeros(shape, dtype=dtype)
    torch.save({"state_dict": state}, path)
    return path


def test_checkpoint_of_a_method_that_is_not_installed(tmp_path, monkeypatch):
    monkeypatch.delitem(METHODS._entries, "capenext", raising=False)
    monkeypatch.delitem(METHODS._aliases, "cape-next", raising=False)
    path = _stripped_capenext_file(tmp_path / "capenext.pth")
    with pytest.raises(CheckpointError, match=r"CapeNext .* checkpoint, but the 'capenext' method is not installed"):
        plan_checkpoint(path)


@pytest.mark.skipif(not CAPENEXT_INSTALLED, reason="the capenext method is not registered")
def test_file_without_its_frozen_text_tower_needs_local_weights(tmp_path):
    path = _stripped_capenext_file(tmp_path / "capenext.pth")
    detection = detect_upstream(path)
    assert detection.method == "capenext" and "without its frozen text tower" in detection.label
    assert any("text_encoder_path" in note for note in detection.notes)
    with torch.device("meta"):
        method, _ = build_method("capenext", detection.config, {"random_init": True})
    with pytest.raises(CheckpointError, match=r"holds no text_backbone.\* weights .*text_encoder_path=PATH"):
        load_upstream(method, path)


def test_stripped_text_tower_is_taken_from_local_weights(tmp_path):
    """A file without text_backbone.* loads when the method's gte holds real (local) weights."""
    _, _, state, batch, expected = reduced_case("capex-gte-a", 3)
    stripped = {k: v for k, v in state.items() if not k.startswith("text_backbone.")}
    target, _ = build_reduced("capex-gte-a", seed=3)
    target.text_backbone.encoder_id = "gte:/local/gte-base-en-v1.5:max77"  # as if loaded from a folder
    report = load_upstream(target, stripped)
    assert any("text tower from the local weights" in note for note in report.notes)
    assert_same_outputs(expected, outputs(target, batch))


def test_cli_run_with_an_upstream_file_picks_method_and_config(tmp_path, quirky_root, capsys):
    from cape_bench.cli import main

    path = write_mmcv(tmp_path / "graphcape_split1.pth", reduced_case("graphcape-a")[2])
    args = ["run", "--checkpoint", str(path), "--split", "1", "--data", str(quirky_root), "--num-episodes", "1",
            "--queries", "2", "--no-progress", "--results", str(tmp_path / "r")]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "--method graphcape --config graphcape_s" in out
    record = json.loads((tmp_path / "r" / "runs" / "mp100" / "oneshot" / "graphcape-graphcape_s" / "split1.json").read_text())
    assert record["checkpoint"]["sha256"] and record["episodes"]["pairs"] == 5 * 2
    # A --method that does not fit the file is refused, naming what the file is.
    assert main(args[:1] + ["--method", "capex"] + args[1:]) == 2
    assert "graphcape" in capsys.readouterr().err
