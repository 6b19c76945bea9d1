"""CapeNext: the fusion module against UPSTREAM_ARCH §3, class prompts per pair, and the full-size facts.

The registry-parametrised tests (tests/test_methods.py, tests/test_fast_eval.py) already run
the tiny config through loss/backward/predict and fast == naive; here the tiny model is built
with the weight-free `hash` text encoder (384-d, the toy image tower's width) so each test
builds in well under a second.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from cape_bench.build import build_method, load_config
from cape_bench.errors import ConfigError, WeightsMissingError
from cape_bench.method import CapeMethod
from cape_bench.nn.backbones import WEIGHTS_ENV
from cape_bench.nn.fusion import AttentionLayer, CapeNextFusion, class_prompt
from tests import weights
from tests.spies import record_encode_calls
from tests.test_methods import make_batch, select

FIXTURES = Path(__file__).parent / "fixtures"
TOLERANCE = dict(atol=1e-5, rtol=0)
TINY_CLIP = dict(
    embed_dim=32,
    vision_cfg=dict(image_size=224, layers=1, width=32, head_width=16, patch_size=32),
    text_cfg=dict(context_length=77, vocab_size=49408, width=32, heads=2, layers=1),
)


def _method(name: str = "capenext", perturb: bool = True, **overrides) -> CapeMethod:
    torch.manual_seed(0)
    options = {"text_encoder": "hash", "text_encoder_options": {"dim": 384}, **overrides}
    method = build_method(name, "tiny", overrides=options)[0]
    if perturb:
        weights.perturb(method)
    return method.eval()


@pytest.fixture(scope="module")
def built():
    """The default tiny CapeNext (hash text encoder), built and perturbed once for the module."""
    return _method()


@pytest.fixture
def capenext(built):
    built.eval()
    built.zero_grad(set_to_none=True)
    built.embedding_cache.clear()
    return built




def _with_class_names(batch, names):
    return dataclasses.replace(batch, pairs=dataclasses.replace(batch.pairs, class_names=list(names)))


def _fusion(seed: int = 0, **options) -> CapeNextFusion:
    torch.manual_seed(seed)
    return CapeNextFusion(dim=32, num_heads=4, ffn_dim=48, dropout=0.0, **options).eval()


def _embeddings(batch: int = 2, num_kpt: int = 5, dim: int = 32, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    joint = F.normalize(torch.randn(batch, num_kpt, dim, generator=generator), dim=-1)
    image = F.normalize(torch.randn(batch, dim, generator=generator), dim=-1)
    category = F.normalize(torch.randn(batch, dim, generator=generator), dim=-1)
    return joint, image, category


# ----------------------------------------------------------------------------- fusion module vs upstream


def test_fusion_state_dict_matches_upstream_additional_module():
    reference = json.loads((FIXTURES / "capenext_fusion_keys.json").read_text())
    module = CapeNextFusion()  # the published sizes: 512-d, 8 heads, FFN 2048
    shapes = {k: list(v.shape) for k, v in module.state_dict().items()}
    assert shapes == reference["keys"]
    assert list(shapes) == list(reference["keys"])  # registration order too
    assert sum(p.numel() for p in module.parameters()) == reference["num_params"] == 15_760_386
    assert sum(p.numel() for p in module.non_linear.parameters()) == reference["non_linear_params"]


def test_attention_layer_adds_the_original_query_in_its_second_residual():
    torch.manual_seed(0)
    layer = AttentionLayer(16, 2, 32, dropout=0.0).eval()
    q, k, v = torch.randn(2, 5, 16), torch.randn(2, 3, 16), torch.randn(2, 3, 16)
    attended = layer.attn(q, k, v)[0]
    hidden = layer.norm1(q + attended)
    with torch.no_grad():
        torch.testing.assert_close(layer(q, k, v), layer.norm2(q + layer.ffn(hidden)), **TOLERANCE)
        assert not torch.allclose(layer(q, k, v), layer.norm2(hidden + layer.ffn(hidden)), atol=1e-3)
        # The attention output reaches the output only through the FFN: without it, keys and values
        # change nothing and the layer is norm2(q).
        layer.ffn[3].weight.zero_()
        layer.ffn[3].bias.zero_()
        torch.testing.assert_close(layer(q, k, v), layer.norm2(q), **TOLERANCE)
        torch.testing.assert_close(layer(q, torch.randn(2, 3, 16), torch.randn(2, 3, 16)), layer.norm2(q), **TOLERANCE)


def test_fusion_forward_matches_the_upstream_recipe():
    module = _fusion()
    joint, image, category = _embeddings()
    with torch.no_grad():
        tokens = torch.stack((category, image), dim=1)  # upstream: [cat_emb; img_emb]
        tokens = module.inter_attention_layer(tokens, tokens, tokens)
        tokens = module.norm1(tokens + module.inter_ffn(tokens))
        c, i = tokens[:, 0:1], tokens[:, 1:2]
        t = module.text_cross_attention_layer(joint, c, c)
        m = module.image_cross_attention_layer(joint, i, i)
        f = torch.sigmoid(module.weight_category(t)) * t + torch.sigmoid(module.weight_image(m)) * m
        f = module.norm2(f + module.weighted_ffn(f))
        expected = module.norm3(joint + f)
        torch.testing.assert_close(module(joint, image, category), expected, **TOLERANCE)


def test_fusion_refines_each_joint_on_its_own():
    """Padded zero rows (computed, as upstream) never change valid rows; batch items are independent."""
    module = _fusion()
    joint, image, category = _embeddings(batch=3, num_kpt=4)
    padded = torch.cat((joint, torch.zeros(3, 6, 32)), dim=1)
    with torch.no_grad():
        plain = module(joint, image, category)
        out = module(padded, image, category)
        alone = torch.cat([module(joint[b:b + 1], image[b:b + 1], category[b:b + 1]) for b in range(3)])
    torch.testing.assert_close(out[:, :4], plain, **TOLERANCE)
    assert out[:, 4:].abs().sum() > 0  # padded rows become non-zero (the head masks them again)
    torch.testing.assert_close(alone, plain, **TOLERANCE)


def test_gates_off_is_the_constant_one():
    gated, constant = _fusion(), _fusion(gates=False)
    assert not hasattr(constant, "weight_category") and not hasattr(constant, "weight_image")
    missing, unexpected = constant.load_state_dict(gated.state_dict(), strict=False)
    assert not missing and sorted(unexpected) == ["weight_category.bias", "weight_category.weight",
                                                  "weight_image.bias", "weight_image.weight"]
    joint, image, category = _embeddings()
    with torch.no_grad():
        assert not torch.allclose(gated(joint, image, category), constant(joint, image, category), atol=1e-4)
        for gate in (gated.weight_category, gated.weight_image):  # sigmoid(100) == 1.0 in float32
            gate.weight.zero_()
            gate.bias.fill_(100.0)
        torch.testing.assert_close(gated(joint, image, category), constant(joint, image, category), **TOLERANCE)


def test_zero_init_refinement_starts_as_norm3_of_the_joint_and_still_learns():
    joint, image, category = _embeddings()
    upstream, zero = _fusion(), _fusion(zero_init_refinement=True)
    assert upstream.state_dict().keys() == zero.state_dict().keys()
    torch.testing.assert_close(upstream.norm2.weight, torch.ones(32))
    with torch.no_grad():
        torch.testing.assert_close(zero(joint, image, category), zero.norm3(joint), **TOLERANCE)
    zero.train()
    zero(joint, image, category).pow(2).sum().backward()
    assert zero.norm2.weight.grad.abs().sum() > 0  # the gain grows, then the streams get gradients
    with pytest.raises(ValueError, match="norm2"):
        CapeNextFusion(dsfr=False, zero_init_refinement=True)
    # The tiny config asks for it, and nothing after construction re-initialises it.
    assert not _method(perturb=False).additional_module.norm2.weight.any()


def test_upstream_init_makes_the_refined_keypoints_of_a_query_nearly_parallel():
    """Why the tiny config starts norm2 at 0: at width 384 the unit-norm joints vanish under the fused term."""
    joint, image, category = _embeddings(num_kpt=8, dim=384)
    off_diagonal = ~torch.eye(8, dtype=torch.bool)

    def mean_cosine(embeddings):
        unit = F.normalize(embeddings, dim=-1)
        return float((unit @ unit.transpose(1, 2))[:, off_diagonal].mean())

    for zero_init, low, high in ((False, 0.8, 1.0), (True, -0.2, 0.2)):
        torch.manual_seed(0)
        module = CapeNextFusion(dim=384, num_heads=4, ffn_dim=256, dropout=0.0, zero_init_refinement=zero_init)
        with torch.no_grad():
            assert low < mean_cosine(module(joint, image, category)) < high, zero_init
    assert abs(mean_cosine(joint)) < 0.2


def test_ablation_switches():
    joint, image, category = _embeddings()
    other = F.normalize(torch.randn(2, 32), dim=-1)
    with torch.no_grad():
        no_hcmi = _fusion(hcmi=False)
        assert not any(hasattr(no_hcmi, n) for n in ("inter_attention_layer", "inter_ffn", "norm1"))
        i, c = no_hcmi.interact(image, category)
        torch.testing.assert_close(i[:, 0], image)
        torch.testing.assert_close(c[:, 0], category)

        no_dsfr = _fusion(dsfr=False)
        i, c = no_dsfr.interact(image, category)
        expected = joint + no_dsfr.image_projection(i) + no_dsfr.category_projection(c)
        torch.testing.assert_close(no_dsfr(joint, image, category), expected, **TOLERANCE)
        assert not any(hasattr(no_dsfr, n) for n in ("text_cross_attention_layer", "weighted_ffn", "weight_image"))

        image_only = _fusion(mode="image_only")
        assert not hasattr(image_only, "text_cross_attention_layer")
        torch.testing.assert_close(image_only(joint, image, category), image_only(joint, image, other))
        torch.testing.assert_close(image_only(joint, image, None), image_only(joint, image, category))
    with pytest.raises(ValueError, match="gates"):
        CapeNextFusion(dsfr=False, gates=False)
    with pytest.raises(ValueError, match="mode"):
        CapeNextFusion(mode="class_only")


def test_ablation_configs_are_switches_of_the_default():
    base = load_config("capenext", "capenext")["fusion"]
    for config, switch in [("capenext_no_gates", {"gates": False}), ("capenext_no_hcmi", {"hcmi": False}),
                           ("capenext_no_dsfr", {"dsfr": False}), ("capenext_image_only", {"mode": "image_only"})]:
        assert load_config("capenext", config)["fusion"] == {**base, **switch}


# ----------------------------------------------------------------------------- the method


def test_class_prompt_template():
    assert class_prompt("zebra body") == "a photo of zebra body"  # upstream: 'a photo of ' + name
    assert class_prompt("Woodpecker", "an image of a {}.") == "an image of a Woodpecker."
    with pytest.raises(ValueError, match="exactly one"):
        class_prompt("horse", "a photo")
    method = _method(perturb=False, **{"fusion.class_template": "a picture of a {}"})
    assert method.class_prompts(["horse body", "chair"]) == ["a picture of a horse body", "a picture of a chair"]
    with pytest.raises(ConfigError, match="class_template"):
        _method(perturb=False, **{"fusion.class_template": "no slot"})


def test_decode_encodes_the_prompt_of_each_pair_once(monkeypatch, capenext):
    method = capenext
    calls = record_encode_calls(monkeypatch, method.text_backbone)
    names = ["zebra body", "horse body", "chair"]
    batch = make_batch(method, batch=3, num_kpt=6)
    with torch.inference_mode():
        query, support = method.encode_query(batch.query), method.encode_support(batch.support)
        for round_ in range(4):  # the runner's fast path: decode per pair batch, classes repeating
            pairs = dataclasses.replace(batch.pairs, class_names=names[round_ % 2:] + names[:round_ % 2])
            method.decode(query, support, pairs)
    encoded = [text for call in calls for text in call]
    assert len(encoded) == len(set(encoded))  # nothing encoded twice
    assert {class_prompt(n) for n in names} <= set(encoded)
    assert method.embedding_cache.hits >= 9


def test_class_noise_changes_capenext_but_not_capex(capenext):
    capex = _method("capex")
    batch = _with_class_names(make_batch(capenext, batch=2, num_kpt=9, seed=4), ["zebra body", "zebra body"])
    noisy = dataclasses.replace(batch.pairs, class_names=["zebra body", "swivelchair"])
    outputs = {}
    with torch.inference_mode():
        for name, method in (("capenext", capenext), ("capex", capex)):
            query, support = method.encode_query(batch.query), method.encode_support(batch.support)
            outputs[name] = method.decode(query, support, batch.pairs), method.decode(query, support, noisy)
    torch.testing.assert_close(*outputs["capex"], atol=0, rtol=0)
    clean_next, noisy_next = outputs["capenext"]
    torch.testing.assert_close(noisy_next[0], clean_next[0], **TOLERANCE)  # the class is per pair
    assert (noisy_next[1] - clean_next[1]).abs().max() > 1e-4


def test_batch_of_pairs_with_different_classes_equals_each_pair_alone(capenext):
    method = capenext
    batch = _with_class_names(make_batch(method, batch=3, num_kpt=7, seed=3), ["zebra body", "chair", "hand"])
    with torch.inference_mode():
        together = method.predict(batch)
        alone = torch.cat([method.predict(select(batch, [i])) for i in range(3)])
    torch.testing.assert_close(together, alone, **TOLERANCE)


@pytest.mark.parametrize("missing", ["", None, "   "])
def test_missing_class_name_names_the_category(missing, capenext):
    method = capenext
    batch = _with_class_names(make_batch(method, batch=2, num_kpt=6), ["zebra body", missing])
    with pytest.raises(ConfigError, match=r"no class name for query 1 \(category 7.*fallback_prompt"), \
            torch.inference_mode():
        method.predict(batch)


def test_fallback_prompt_replaces_a_missing_class_name(monkeypatch):
    method = _method(**{"fusion.fallback_prompt": "a photo of an object"})
    calls = record_encode_calls(monkeypatch, method.text_backbone)
    batch = make_batch(method, batch=2, num_kpt=6)
    with torch.inference_mode():
        query, support = method.encode_query(batch.query), method.encode_support(batch.support)
        fallback = method.decode(query, support, dataclasses.replace(batch.pairs, class_names=["zebra body", ""]))
        explicit = method.decode(query, support, dataclasses.replace(batch.pairs, class_names=["zebra body", "an object"]))
    assert "a photo of an object" in [text for call in calls for text in call]
    torch.testing.assert_close(fallback, explicit, **TOLERANCE)  # same prompt string, same embedding


def test_class_name_count_must_match_the_pairs(capenext):
    method = capenext
    batch = _with_class_names(make_batch(method, batch=2, num_kpt=6), ["zebra body"])
    with pytest.raises(ConfigError, match="1 class names for 2 pairs"), torch.inference_mode():
        method.predict(batch)


def test_image_only_reads_no_class_name():
    method = _method(**{"fusion.mode": "image_only"})
    assert "class" not in method.support_kinds
    batch = make_batch(method, batch=2, num_kpt=6)
    with torch.inference_mode():
        torch.testing.assert_close(method.predict(_with_class_names(batch, ["", ""])), method.predict(batch))


def test_image_embedding_is_the_resized_imagenet_crop_through_the_clip_image_tower(capenext):
    method = capenext
    images = torch.randn(2, 3, method.input_size, method.input_size)
    with torch.inference_mode():
        embedding = method.encode_query(dataclasses.replace(make_batch(method).query, images=images)
                                        ).per_item["image_embedding"]
        resized = F.interpolate(images, size=(224, 224), mode="bilinear", align_corners=False)
        expected = F.normalize(method.image_encoder.model.encode_image(resized), dim=-1)
    assert embedding.shape == (2, 384)
    torch.testing.assert_close(embedding, expected, **TOLERANCE)
    torch.testing.assert_close(embedding.norm(dim=-1), torch.ones(2), **TOLERANCE)


def test_the_text_encoders_own_clip_image_tower_is_used_by_default():
    """Upstream's layout: one CLIP (text_backbone) for keypoint texts, class prompts and the query image."""
    method = _method(text_encoder="clip-vit-b32", text_encoder_options={"model_cfg": TINY_CLIP}, random_init=True,
                     image_encoder=None)
    assert method.image_encoder is None and method.image_tower is method.text_backbone
    assert method.additional_module.dim == 32
    batch = make_batch(method, batch=2, num_kpt=6)
    with torch.inference_mode():
        assert torch.isfinite(method.predict(batch)).all()


def test_a_text_encoder_without_image_tower_needs_an_image_encoder():
    with pytest.raises(ConfigError, match="image_encoder"):
        _method(image_encoder=None)


def test_trains_after_inference_with_cached_prompts(capenext):
    """Prompt rows cached under inference_mode (evaluation) must not break a later training step."""
    method = capenext
    batch = make_batch(method, batch=1, num_kpt=6)
    with torch.inference_mode():
        method.predict(batch)
    method.train()
    losses = method.loss(batch)
    sum(losses.values()).backward()
    method.eval()
    assert method.additional_module.weight_category.weight.grad.abs().sum() > 0
    assert method.additional_module.inter_attention_layer.attn.in_proj_weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in method.image_encoder.parameters())


# ----------------------------------------------------------------------------- full size


# config -> (total, frozen) parameters. capenext: upstream counts.json `capenext.total_params`
# (204,333,211; frozen = the whole CLIP, `text_backbone` 151,277,313; 53,055,898 train =
# `effectively_trained_params`). The ablations remove built modules from it (UPSTREAM_ARCH §3 sizes):
FULL_SIZE = {
    "capenext": (204_333_211, 151_277_313),
    "capenext_no_gates": (204_333_211 - 2 * 513, 151_277_313),  # weight_category, weight_image
    # inter_attention_layer 3,152,384 + inter_ffn 2,099,712 + norm1 1,024
    "capenext_no_hcmi": (204_333_211 - 5_253_120, 151_277_313),
    # - two cross-attention layers, weighted_ffn, norm2/3, gates + two Linear(512, 512)
    "capenext_no_dsfr": (204_333_211 - 2 * 3_152_384 - 2_099_712 - 2_048 - 1_026 + 2 * 262_656, 151_277_313),
    "capenext_image_only": (204_333_211 - 3_152_384 - 513, 151_277_313),  # text_cross_attention_layer, weight_category
}


@pytest.mark.parametrize("config", sorted(FULL_SIZE))
def test_full_size_parameter_counts_on_meta(config):
    with torch.device("meta"):
        method, _ = build_method("capenext", config, overrides={"random_init": True})
    total, frozen = FULL_SIZE[config]
    counts = method.parameter_counts()
    print(f"capenext/{config}: {counts['total']:,} params, {counts['trainable']:,} trainable, {counts['frozen']:,} frozen")
    assert counts == {"total": total, "trainable": total - frozen, "frozen": frozen}
    assert sum(p.numel() for p in method.text_backbone.parameters()) == frozen
    if config == "capenext":
        fusion = json.loads((FIXTURES / "capenext_fusion_keys.json").read_text())["keys"]
        head = json.loads((FIXTURES / "keypoint_head_keys.json").read_text())["heads"]["capenext"]["keys"]
        state = {k: list(v.shape) for k, v in method.state_dict().items()}
        assert {k[len("additional_module."):]: v for k, v in state.items() if k.startswith("additional_module.")} == fusion
        assert {k[len("keypoint_head."):]: v for k, v in state.items() if k.startswith("keypoint_head.")} == head


def test_full_size_without_clip_weights_names_the_file():
    with pytest.raises(WeightsMissingError) as info:
        build_method("capenext", "capenext", overrides={"backbone": "tiny"})
    message = str(info.value)
    assert "ViT-B-32.pt" in message and WEIGHTS_ENV in message and "text_encoder_path" in message


def test_separate_image_encoder_without_weights_names_the_file():
    with pytest.raises(WeightsMissingError) as info:
        _method(perturb=False, image_encoder={"_delete_": True, "model": "ViT-B-32-quickgelu"},
                text_encoder_options={"dim": 512})
    assert "ViT-B-32.pt" in str(info.value) and "image_encoder.weights" in str(info.value)
