"""CapeX (ICLR 2025): GraphCape with keypoint TEXT embeddings in place of support-image features.

The query goes through the backbone; the support contributes only its keypoint
descriptions and its visibility. Each visible keypoint's description is embedded
by a frozen text encoder (gte-base-en-v1.5 in the paper, CLIP ViT-B/32 in
CapeNext's baseline), invisible and padded slots stay zero, and `CapeHead`
(``text_proj``) predicts the query keypoints (UPSTREAM_ARCH §2).

Text embeddings come from an `EmbeddingCache` owned by the method, so each
distinct description is encoded once per run; rows injected with
``method.embedding_cache.put(method.text_encoder_id, texts, rows)`` (or loaded
from the ``text_embeddings`` file) are never encoded, and with
``text_encoder = None`` no encoder is built at all.
"""
from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from cape_bench.errors import ConfigError, WeightsMissingError
from cape_bench.method import Encoded, SupportBatch
from cape_bench.methods._cape_base import CapeHeadMethod
from cape_bench.nn.embedding_cache import EmbeddingCache
from cape_bench.nn.text_encoders import FrozenEncoder, build_text_encoder

__all__ = ["CapeX"]

# `text_encoder_path`, per text encoder name: the builder argument it fills, whether it names a
# folder or a file, and what that must hold (for error messages).
_TEXT_ENCODER_PATHS = {
    "gte-base": ("model_dir", "folder", "a local copy of the Alibaba-NLP/gte-base-en-v1.5 folder (config.json, "
                                        "model.safetensors, tokenizer files)"),
    "sentence-transformers": ("model_dir", "folder", "a local sentence-transformers model folder"),
    "clip-vit-b32": ("weights", "file", "OpenAI's ViT-B-32.pt (or an open_clip ViT-B-32 state dict)"),
}
# Encoders that can be built without weights (`random_init=True` reaches them when no path is given).
_RANDOM_INIT = {"gte-base", "clip-vit-b32"}


def _text_encoder_builder(name: str) -> Callable[..., FrozenEncoder]:
    if name == "gte-base":
        # Plain-torch gte (no trust_remote_code; builds on the meta device): same folder, same recipe
        # (77 tokens, CLS, L2-normalised) as the table's sentence-transformers gte-base.
        from cape_bench.nn.gte import load_gte

        return load_gte
    return lambda **kwargs: build_text_encoder(name, **kwargs)


def _check_text_encoder_path(config: dict) -> None:
    """Fail fast on a `text_encoder_path` that does not exist (folder: ConfigError, file: WeightsMissingError)."""
    name, path = config.get("text_encoder"), config.get("text_encoder_path")
    if path is None or name not in _TEXT_ENCODER_PATHS:
        return
    _, kind, expected = _TEXT_ENCODER_PATHS[name]
    where = f"method {CapeX.method_name!r}, config {config.get('config_name', '<dict>')!r}"
    path = Path(path).expanduser()
    if kind == "folder" and not path.is_dir():
        raise ConfigError(f"{where}: text encoder folder {path} (text_encoder_path) does not exist; expected {expected}")
    if kind == "file" and not path.is_file():
        raise WeightsMissingError(f"{where}: text encoder weights {path} (text_encoder_path) do not exist; "
                                  f"expected {expected}")


class CapeX(CapeHeadMethod):
    """CapeX; config keys: see `methods/capex/configs/capex.py`.

    Attributes:
        text_backbone: The frozen text encoder (None when embeddings are all precomputed).
        embedding_cache: Text embeddings computed or injected so far, keyed by `text_encoder_id`.
    """

    method_name = "capex"
    support_kinds = frozenset({"text"})
    support_proj_name = "text_proj"

    def __init__(self, config: dict | None = None) -> None:
        _check_text_encoder_path(config or {})  # before the backbone: that takes seconds to build
        super().__init__(config)

    def _build_support_encoder(self) -> int:
        self.embedding_cache = EmbeddingCache()
        precomputed = self.config.get("text_embeddings")
        if precomputed:
            self.embedding_cache.load(Path(precomputed).expanduser())
        name = self.config.get("text_encoder")
        if name is None:
            self.text_backbone = None
            self._text_encoder_id = self._precomputed_encoder_id(precomputed)
            return int(self.embedding_cache.dim(self._text_encoder_id))
        self.text_backbone = self._build_text_encoder(str(name))
        self._text_encoder_id = self.text_backbone.encoder_id
        return int(self.text_backbone.dim)

    def _build_text_encoder(self, name: str) -> FrozenEncoder:
        path = self.config.get("text_encoder_path")
        options: dict[str, Any] = dict(self.config.get("text_encoder_options") or {})
        if path is not None:
            if name not in _TEXT_ENCODER_PATHS:
                raise ConfigError(f"{self.where}: text encoder {name!r} takes no text_encoder_path (got {path!r}); "
                                  f"only {', '.join(sorted(_TEXT_ENCODER_PATHS))} load from a path")
            options[_TEXT_ENCODER_PATHS[name][0]] = str(Path(path).expanduser())
        elif name == "sentence-transformers":
            raise ConfigError(f"{self.where}: text encoder 'sentence-transformers' needs the model folder: "
                              f"--cfg-options text_encoder_path=DIR")
        elif self.config.get("random_init") and name in _RANDOM_INIT:
            options["random_init"] = True
        builder = _text_encoder_builder(name)
        if name == "gte-base":  # build_text_encoder checks the arguments of the others
            try:
                inspect.signature(builder).bind(**options)
            except TypeError as error:
                raise ConfigError(f"{self.where}: text encoder 'gte-base' does not take "
                                  f"{sorted(options)} ({error})") from None
        try:
            return builder(**options)
        except WeightsMissingError as error:
            raise WeightsMissingError(f"{self.where}: {str(error).rstrip('.')}. With cape-bench, pass "
                                      f"--cfg-options text_encoder_path=PATH.") from None

    def _precomputed_encoder_id(self, precomputed: str | None) -> str:
        if not precomputed:
            raise ConfigError(f"{self.where}: text_encoder=None needs precomputed embeddings: set "
                              f"text_embeddings=FILE (written by EmbeddingCache.save) or name a text encoder")
        wanted = self.config.get("text_encoder_id")
        ids = self.embedding_cache.encoder_ids()
        if wanted is None and len(ids) == 1:
            return ids[0]
        if wanted is None or wanted not in ids:
            raise ConfigError(f"{self.where}: {precomputed} holds embeddings of encoder ids {ids}; set "
                              f"text_encoder_id to one of them" + (f" (got {wanted!r})" if wanted else ""))
        return str(wanted)

    @property
    def text_encoder_id(self) -> str:
        """The cache key of this method's text embeddings (use it with ``embedding_cache.put``).

        It follows the encoder: loading other weights into it (an upstream checkpoint's text
        tower) gives it a new id, so rows of different weights never mix.
        """
        if self.text_backbone is not None:
            return self.text_backbone.encoder_id
        return self._text_encoder_id

    def keypoint_text_embeddings(self, keypoint_texts: Sequence[Sequence[str]], mask: Tensor,
                                 category_ids: Sequence[int] | None = None) -> Tensor:
        """``[B, K, D]``: the embedding of each masked-in slot's description, zero elsewhere.

        Raises:
            ConfigError: a masked-in slot has no description.
        """
        rows_b, rows_k = mask.nonzero(as_tuple=True)
        texts = []
        for b, k in zip(rows_b.tolist(), rows_k.tolist()):
            names = keypoint_texts[b]
            if k >= len(names):
                category = f"category {category_ids[b]}" if category_ids is not None else f"item {b}"
                raise ConfigError(f"{self.where}: {category} has {len(names)} keypoint descriptions but keypoint "
                                  f"{k} is visible; every keypoint needs a description")
            texts.append(names[k])
        encoder = self.text_backbone if self.text_backbone is not None else self.text_encoder_id
        vectors = self.embedding_cache.encode(encoder, texts)
        embeddings = torch.zeros(*mask.shape, vectors.shape[1], device=mask.device)
        embeddings[rows_b, rows_k] = vectors.to(mask.device)
        return embeddings

    def encode_support(self, support: SupportBatch) -> Encoded:
        """Text embeddings ``[B, K, D]`` of the keypoints visible in the FIRST shot, and that mask.

        Upstream builds the mask from the first shot's target weight only and
        averages the per-shot text embeddings, which are the same for every shot
        (one category, one mask), so one pass gives the same result.
        """
        num_kpt = support.keypoints.shape[2]
        self.check_keypoint_count(num_kpt)
        _, weight = self.keypoint_targets(support.keypoints[:, 0], support.visible[:, 0])
        mask = weight > 0
        embeddings = self.keypoint_text_embeddings(support.keypoint_texts, mask, support.category_ids)
        return Encoded(per_keypoint={"embeddings": embeddings, "mask": mask})
