"""Every registered method, through its `tiny` config: build -> loss -> backward -> predict on a generated episode.

Parametrised over the registry (timm's `test_models.py` pattern), so a new method
folder is tested without touching this file. Below that: the full-size GraphCape
and CapeX facts (parameter counts on the meta device, missing-weights errors) and
CapeX's text-embedding cache.
"""
from __future__ import annotations

import dataclasses

import pytest
import torch

from cape_bench.build import build_method, list_configs
from cape_bench.errors import ConfigError, WeightsMissingError
from cape_bench.method import (
    MAX_KEYPOINTS,
    CapeBatch,
    CapeMethod,
    PairBatch,
    QueryBatch,
    SupportBatch,
)
from cape_bench.nn.embedding_cache import EmbeddingCache
from cape_bench.nn.text_encoders import HashTextEncoder
from cape_bench.registry import METHODS
from tests.spies import record_encode_calls

TINY = "tiny"
DESCRIPTIONS = [
    "nose", "left eye", "right eye", "left ear", "right ear", "neck", "tail base", "tail tip",
    "left front paw", "right front paw", "left hind paw", "right hind paw", "body centre", "withers",
]
# Identical within this; the runner holds the fast path to the naive one at 1e-5.
TOLERANCE = dict(atol=1e-5, rtol=0)


def _registry_params() -> list:
    params = []
    for name in METHODS.names():
        marks = () if TINY in list_configs(name) else pytest.mark.skip(reason=f"{name} has no {TINY!r} config")
        params.append(pytest.param(name, marks=marks))
    return params


@pytest.fixture(scope="module")
def tiny_methods():
    """Build each tiny method once per module (the MiniLM of CapeX tiny takes seconds to load)."""
    built: dict[str, CapeMethod] = {}

    def get(name: str) -> CapeMethod:
        if name not in built:
            torch.manual_seed(0)
            built[name] = build_method(name, TINY)[0]
        return built[name]

    return get


# ----------------------------------------------------------------------------- generated episodes


def _skeleton(num_kpt: int) -> list[tuple[int, int]]:
    """A chain with one branch, as animal skeletons have."""
    edges = [(i, i + 1) for i in range(num_kpt - 1)]
    return edges + ([(0, num_kpt - 1)] if num_kpt > 2 else [])


def make_batch(method: CapeMethod, batch: int = 2, num_kpt: int = 9, shots: int = 1, seed: int = 0) -> CapeBatch:
    """A random episode batch: random crops, keypoints in the crop, ~25% invisible, a skeleton, texts."""
    gen = torch.Generator().manual_seed(seed)
    size = method.input_size
    visible = torch.rand(batch, shots, num_kpt, generator=gen) > 0.25
    visible[:, :, :2] = True  # every item keeps some visible keypoints in every shot
    support_images = None
    if "image" in method.support_kinds:
        support_images = torch.randn(batch, shots, 3, size, size, generator=gen)
    target_visible = torch.rand(batch, num_kpt, generator=gen) > 0.25
    target_visible[:, 0] = True
    skeletons = [_skeleton(num_kpt)] * batch
    support = SupportBatch(
        images=support_images,
        keypoints=torch.rand(batch, shots, num_kpt, 2, generator=gen) * 0.8 + 0.1,
        visible=visible,
        keypoint_texts=[DESCRIPTIONS[:num_kpt]] * batch,
        skeletons=skeletons,
        category_ids=[7] * batch,
    )
    return CapeBatch(
        query=QueryBatch(torch.randn(batch, 3, size, size, generator=gen), [7] * batch),
        support=support,
        pairs=PairBatch(visible.all(dim=1), skeletons, ["zebra body"] * batch),
        target_keypoints=torch.rand(batch, num_kpt, 2, generator=gen) * 0.8 + 0.1,
        target_visible=target_visible,
    )


def pad_batch(batch: CapeBatch, extra: int) -> CapeBatch:
    """The same episodes with `extra` empty keypoint slots, as the naive path's 100 slots."""

    def pad(tensor: torch.Tensor, dim: int) -> torch.Tensor:
        shape = list(tensor.shape)
        shape[dim] = extra
        return torch.cat([tensor, tensor.new_zeros(shape)], dim=dim)

    support = dataclasses.replace(batch.support, keypoints=pad(batch.support.keypoints, 2),
                                  visible=pad(batch.support.visible, 2))
    return dataclasses.replace(
        batch,
        support=support,
        pairs=dataclasses.replace(batch.pairs, keypoint_mask=pad(batch.pairs.keypoint_mask, 1)),
        target_keypoints=pad(batch.target_keypoints, 1),
        target_visible=pad(batch.target_visible, 1),
    )


def select(batch: CapeBatch, rows: list[int]) -> CapeBatch:
    index = torch.tensor(rows)

    def take(tensor):
        return None if tensor is None else tensor.index_select(0, index)

    def pick(values):
        return [values[i] for i in rows]

    return CapeBatch(
        query=QueryBatch(take(batch.query.images), pick(batch.query.category_ids)),
        support=SupportBatch(take(batch.support.images), take(batch.support.keypoints), take(batch.support.visible),
                             pick(batch.support.keypoint_texts), pick(batch.support.skeletons),
                             pick(batch.support.category_ids)),
        pairs=PairBatch(take(batch.pairs.keypoint_mask), pick(batch.pairs.skeletons), pick(batch.pairs.class_names)),
        target_keypoints=take(batch.target_keypoints),
        target_visible=take(batch.target_visible),
    )


# ----------------------------------------------------------------------------- every registered method


@pytest.mark.parametrize("name", _registry_params())
def test_loss_backward(name, tiny_methods):
    method = tiny_methods(name)
    if not method.trainable:
        pytest.skip(f"{name} is not trainable")
    method.train()
    method.zero_grad(set_to_none=True)
    losses = method.loss(make_batch(method, batch=2, num_kpt=9, shots=2))
    assert losses and all(torch.isfinite(v).all() for v in losses.values()), losses
    # The trainer minimises the sum of the entries named "*loss*".
    total = sum(v.mean() for k, v in losses.items() if "loss" in k)
    total.backward()
    grads = [p.grad for p in method.parameters() if p.requires_grad and p.grad is not None]
    assert grads, "no parameter received a gradient"
    assert all(torch.isfinite(g).all() for g in grads)
    assert any(g.abs().sum() > 0 for g in grads)
    frozen = [p for p in method.parameters() if not p.requires_grad]
    assert all(p.grad is None for p in frozen)
    method.zero_grad(set_to_none=True)


@pytest.mark.parametrize("name", _registry_params())
def test_predict_generated_episode(name, tiny_methods):
    method = tiny_methods(name).eval()
    batch = make_batch(method, batch=3, num_kpt=11, shots=1, seed=1)
    with torch.inference_mode():
        out = method.predict(batch)
    assert out.shape == (3, 11, 2)
    assert torch.isfinite(out).all()
    assert (out >= 0).all() and (out <= 1).all()


@pytest.mark.parametrize("name", _registry_params())
def test_padding_invariance(name, tiny_methods):
    """K slots and K+13 empty slots give the same valid outputs (fast path vs naive path)."""
    method = tiny_methods(name).eval()
    if not method.pads_keypoints_dynamically:
        pytest.skip(f"{name} always runs with {MAX_KEYPOINTS} slots")
    num_kpt = 8
    batch = make_batch(method, batch=2, num_kpt=num_kpt, shots=2, seed=2)
    padded = pad_batch(batch, 13)
    with torch.inference_mode():
        plain = method.predict(batch)
        naive = method.predict(padded)
        assert naive.shape == (2, num_kpt + 13, 2)
        torch.testing.assert_close(naive[:, :num_kpt], plain, **TOLERANCE)
        if method.separable:
            # The runner's fast path: encode at K, zero-pad the support encoding, decode at K+13.
            query = method.encode_query(batch.query)
            support = method.encode_support(batch.support).padded(num_kpt + 13)
            fast = method.decode(query, support, padded.pairs)
            torch.testing.assert_close(fast[:, :num_kpt], plain, **TOLERANCE)


@pytest.mark.parametrize("name", _registry_params())
def test_batch_invariance(name, tiny_methods):
    method = tiny_methods(name).eval()
    batch = make_batch(method, batch=3, num_kpt=7, shots=1, seed=3)
    with torch.inference_mode():
        together = method.predict(batch)
        alone = torch.cat([method.predict(select(batch, [i])) for i in range(3)])
    torch.testing.assert_close(together, alone, **TOLERANCE)


# ----------------------------------------------------------------------------- full-size facts

# (method, config) -> (total, frozen) parameters. Totals are upstream's, from
# /work/shared/reference/upstream_state_dicts/counts.json `<model>.total_params` (frozen = the text
# encoder, run under no_grad upstream; counts.json `text_backbone`). Both include the unused
# 768->1000 backbone classifier, as the upstream checkpoints do.
FULL_SIZE = {
    ("graphcape", "graphcape_s"): (58_742_312, 0),  # counts.json graphcape.total_params
    # Not published: SwinV2-T backbone 28,347,154 (counts.json capex params_by_group.backbone)
    # + GraphCape head 9,013,894 (graphcape params_by_group.keypoint_head).
    ("graphcape", "graphcape_t"): (37_361_048, 0),
    ("capex", "capex"): (174_137_240, 136_776_192),  # capex.total_params; text_backbone (gte)
    ("capex", "capex_s"): (195_518_504, 136_776_192),  # capex_s.total_params
    ("capex", "capex_clip"): (188_572_825, 151_277_313),  # capex_clip.total_params; whole CLIP
    # Fusion paper (Li & Liu) Table 5: Method-FLF 195.715 M, Method-DLF 203.742 M. Both build on
    # CapeX-S (frozen gte-base `text_backbone` 136,776,192):
    #   FLF = CapeX-S + CMAA's three bias-free 256x256 projections + gamma = 195,715,113;
    #   DLF = CapeX-S + encoder 1,975,296 + proposal generator 197,504 + graph decoder 5,853,696
    #         + query_proj 768->256 196,864 (counts.json capex_s.params_by_group) = 203,741,864.
    ("fusion-flf", "fusion_flf"): (195_518_504 + 3 * 256 * 256 + 1, 136_776_192),
    ("fusion-dlf", "fusion_dlf"): (195_518_504 + 1_975_296 + 197_504 + 5_853_696 + 196_864, 136_776_192),
    # GraphCape-S with plain FFNs: 3 decoder layers x 197,376 fewer GCN parameters.
    ("capeformer", "capeformer"): (58_150_184, 0),
}


@pytest.mark.parametrize(("name", "config"), sorted(FULL_SIZE))
def test_full_size_parameter_counts_on_meta(name, config):
    with torch.device("meta"):
        method, _ = build_method(name, config, overrides={"random_init": True})
    total, frozen = FULL_SIZE[name, config]
    counts = method.parameter_counts()
    print(f"{name}/{config}: {counts['total']:,} params, {counts['trainable']:,} trainable, {counts['frozen']:,} frozen")
    assert counts == {"total": total, "trainable": total - frozen, "frozen": frozen}
    text_backbone = getattr(method, "text_backbone", None)
    assert sum(p.numel() for p in text_backbone.parameters()) == frozen if frozen else text_backbone is None


@pytest.mark.parametrize(("name", "config", "file"), [
    ("graphcape", "graphcape_s", "swinv2_small_patch4_window16_256.pth"),
    ("graphcape", "graphcape_t", "swinv2_tiny_patch4_window16_256.pth"),
    ("capex", "capex_s", "swinv2_small_patch4_window16_256.pth"),
])
def test_full_size_without_backbone_weights_names_the_file(name, config, file):
    with pytest.raises(WeightsMissingError) as info:
        build_method(name, config)
    message = str(info.value)
    assert file in message and "backbone_weights" in message and config in message


@pytest.mark.parametrize(("config", "needs"), [("capex", "gte-base-en-v1.5"), ("capex_clip", "ViT-B-32.pt")])
def test_full_size_without_text_encoder_weights_names_the_file(config, needs):
    # The tiny backbone needs no weights, so the text encoder is what fails.
    with pytest.raises(WeightsMissingError) as info:
        build_method("capex", config, overrides={"backbone": "tiny"})
    assert needs in str(info.value) and "text_encoder_path" in str(info.value)


def test_backbone_weights_file_that_does_not_exist(tmp_path):
    missing = tmp_path / "swin.pth"
    with pytest.raises(WeightsMissingError, match=str(missing)):
        build_method("graphcape", "graphcape_s", overrides={"backbone_weights": str(missing)})


@pytest.mark.parametrize("encoder", ["gte-base", "sentence-transformers"])
def test_text_encoder_folder_that_does_not_exist(tmp_path, encoder):
    missing = tmp_path / "no-such-encoder"
    with pytest.raises(ConfigError, match=str(missing)):
        build_method("capex", TINY, overrides={"text_encoder": encoder, "text_encoder_path": str(missing)})


def test_clip_weights_file_that_does_not_exist(tmp_path):
    missing = tmp_path / "ViT-B-32.pt"
    with pytest.raises(WeightsMissingError, match=f"{missing}.*text_encoder_path"):
        build_method("capex", "capex_clip", overrides={"text_encoder_path": str(missing)})


def test_unknown_head_setting_is_a_config_error():
    with pytest.raises(ConfigError, match="head has no setting num_layers"):
        build_method("graphcape", TINY, overrides={"head.num_layers": 4})


@pytest.mark.parametrize("name", ["graphcape", "capex"])
def test_more_than_100_keypoints_is_a_config_error(name, tiny_methods):
    method = tiny_methods(name).eval()
    batch = make_batch(method, batch=1, num_kpt=MAX_KEYPOINTS + 1)
    batch.support.keypoint_texts[0] = [f"point {i}" for i in range(MAX_KEYPOINTS + 1)]
    with pytest.raises(ConfigError, match=f"{MAX_KEYPOINTS + 1} keypoint slots.*at most {MAX_KEYPOINTS}"), torch.inference_mode():
        method.predict(batch)


# ----------------------------------------------------------------------------- CapeX text embeddings


def _hash_capex(**overrides) -> CapeMethod:
    """CapeX tiny with the weight-free hash encoder, cheap enough to build per test."""
    torch.manual_seed(0)
    options = {"text_encoder": "hash", "text_encoder_options": {"dim": 32}, **overrides}
    return build_method("capex", TINY, overrides=options)[0].eval()




def test_each_description_is_encoded_once_across_support_batches(monkeypatch):
    method = _hash_capex()
    calls = record_encode_calls(monkeypatch, method.text_backbone)
    categories = {3: DESCRIPTIONS[:9], 5: ["left wing tip", "right wing tip", "beak", "tail", "nose"]}
    with torch.inference_mode():
        for seed in range(6):
            batch = make_batch(method, batch=3, num_kpt=9 if seed % 2 else 5, seed=seed)
            texts = categories[3] if seed % 2 else categories[5]
            support = dataclasses.replace(batch.support, keypoint_texts=[texts] * 3)
            method.encode_support(support)
    encoded = [text for call in calls for text in call]
    assert len(encoded) == len(set(encoded))  # nothing encoded twice
    assert set(encoded) <= set(categories[3]) | set(categories[5])
    assert method.embedding_cache.hits > 0


def test_support_embeddings_are_the_visible_descriptions_of_the_first_shot():
    method = _hash_capex()
    batch = make_batch(method, batch=2, num_kpt=6, shots=2, seed=4)
    batch.support.visible[0, 0, 3] = False  # invisible in shot 0 only: masked (first shot decides)
    batch.support.visible[0, 1, 4] = False  # invisible in shot 1 only: kept (as upstream CapeX)
    batch.support.visible[0, 0, 4] = True
    with torch.inference_mode():
        encoded = method.encode_support(batch.support)
    mask, embeddings = encoded.per_keypoint["mask"], encoded.per_keypoint["embeddings"]
    torch.testing.assert_close(mask, batch.support.visible[:, 0])
    reference = HashTextEncoder(dim=32).encode(DESCRIPTIONS[:6])
    for b in range(2):
        for k in range(6):
            expected = reference[k] if mask[b, k] else torch.zeros(32)
            torch.testing.assert_close(embeddings[b, k], expected)


def test_put_embeddings_are_used_without_encoding(monkeypatch):
    method = _hash_capex()
    calls = record_encode_calls(monkeypatch, method.text_backbone)
    rows = torch.nn.functional.normalize(torch.randn(9, 32), dim=-1)
    method.embedding_cache.put(method.text_encoder_id, DESCRIPTIONS[:9], rows)
    batch = make_batch(method, batch=2, num_kpt=9)
    with torch.inference_mode():
        encoded = method.encode_support(batch.support)
        method.predict(batch)
    assert calls == []
    visible = batch.support.visible[0, 0]
    torch.testing.assert_close(encoded.per_keypoint["embeddings"][0][visible], rows[visible])


def test_precomputed_embeddings_need_no_text_encoder(tmp_path):
    cache = EmbeddingCache()
    cache.encode(HashTextEncoder(dim=24, seed=5), DESCRIPTIONS)
    path = tmp_path / "texts.pt"
    cache.save(path)
    method = _hash_capex(text_encoder=None, text_embeddings=str(path))
    assert method.text_backbone is None
    assert method.keypoint_head.text_proj.in_features == 24
    batch = make_batch(method, batch=2, num_kpt=9)
    with torch.inference_mode():
        out = method.predict(batch)
    assert out.shape == (2, 9, 2) and torch.isfinite(out).all()
    unknown = dataclasses.replace(batch.support, keypoint_texts=[["mystery"] * 9] * 2)
    with pytest.raises(ConfigError, match="mystery"), torch.inference_mode():
        method.encode_support(unknown)


def test_text_encoder_none_without_embeddings_is_a_config_error():
    with pytest.raises(ConfigError, match="text_embeddings"):
        build_method("capex", TINY, overrides={"text_encoder": None})


def test_missing_description_for_a_visible_keypoint_is_a_config_error():
    method = _hash_capex()
    batch = make_batch(method, batch=1, num_kpt=6)
    short = dataclasses.replace(batch.support, keypoint_texts=[DESCRIPTIONS[:1]])
    with pytest.raises(ConfigError, match="category 7 has 1 keypoint descriptions"), torch.inference_mode():
        method.encode_support(short)


# ----------------------------------------------------------------------------- GraphCape support pooling


def test_graphcape_mask_is_the_product_over_shots(tiny_methods):
    method = tiny_methods("graphcape").eval()
    batch = make_batch(method, batch=1, num_kpt=6, shots=2, seed=5)
    batch.support.visible[0, :, 2:4] = True
    batch.support.visible[0, 1, 3] = False
    batch.support.keypoints[0, 0, 5] = torch.tensor([1.2, 0.5])  # outside the crop: target weight 0
    with torch.inference_mode():
        encoded = method.encode_support(batch.support)
    mask, embeddings = encoded.per_keypoint["mask"][0], encoded.per_keypoint["embeddings"][0]
    assert mask[2] and not mask[3] and not mask[5]
    assert (embeddings[~mask] == 0).all() and (embeddings[mask].abs().sum(-1) > 0).all()
