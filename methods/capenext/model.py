"""CapeNext (AAAI 2026): CapeX's keypoint-text support, refined per query by a fusion module.

CapeNext is the CapeX code with CLIP ViT-B/32 text embeddings plus ``additional_module``
(UPSTREAM_ARCH §3): before the head, the L2-normalised joint (keypoint) text embeddings
``[B, K, 512]`` are refined with

* a **class embedding**: the CLIP text embedding of ``class_prompt(name, template)``
  (default "a photo of {}"), where ``name`` is the query's class name from
  ``PairBatch.class_names`` (per pair, so the robustness protocol can substitute it);
* an **image embedding**: the ImageNet-normalised query crop, resized bilinearly to the
  CLIP image size (224, align_corners=False), through the frozen CLIP image tower,
  L2-normalised (no CLIP normalisation, as upstream).

Stages: ``encode_query`` runs the image backbone AND the CLIP image tower (query-only
work, computed once per query crop); ``encode_support`` is CapeX's (keypoint texts of the
first shot's visible keypoints); ``decode`` encodes the pair's class prompt (through the
method's `EmbeddingCache`: once per distinct prompt), runs the fusion module on the
joint embeddings (padded rows included; each joint is refined on its own, so padding
never changes a valid row) and the head, which re-applies the mask before ``text_proj``.
"""
from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from cape_bench.errors import ConfigError, WeightsMissingError, reject_unknown_settings
from cape_bench.method import CapeBatch, Encoded, PairBatch, QueryBatch
from cape_bench.methods.capex.model import CapeX
from cape_bench.nn.fusion import DEFAULT_CLASS_TEMPLATE, CapeNextFusion, class_prompt
from cape_bench.nn.text_encoders import ClipTextEncoder, load_clip

__all__ = ["CapeNext", "class_prompt"]

# `fusion` config keys read by the method itself; the others are CapeNextFusion arguments.
_PROMPT_KEYS = ("class_template", "fallback_prompt")
# `image_encoder` config keys (load_clip arguments).
_IMAGE_ENCODER_KEYS = ("model", "weights", "model_cfg", "random_init")


class CapeNext(CapeX):
    """CapeNext; config keys: see `methods/capenext/configs/capenext.py`.

    Attributes:
        text_backbone: The frozen text encoder (CLIP ViT-B/32 at full size; both towers).
        image_encoder: A separate frozen CLIP used only for its image tower, or None when the
            text encoder's own image tower is used (upstream's layout).
        additional_module: The `CapeNextFusion` module (upstream state-dict prefix).
        class_template: The class prompt template (config ``fusion.class_template``).
        fallback_prompt: Prompt used when a pair has no class name (``fusion.fallback_prompt``),
            or None to raise instead.
    """

    method_name = "capenext"
    support_kinds = frozenset({"text", "class"})
    support_proj_name = "text_proj"

    def __init__(self, config: dict | None = None) -> None:
        super().__init__(config)
        options = dict(self.config.get("fusion") or {})
        self.class_template = options.pop("class_template", DEFAULT_CLASS_TEMPLATE)
        self.fallback_prompt = options.pop("fallback_prompt", None)
        try:
            class_prompt("zebra body", self.class_template)
        except ValueError as error:
            raise ConfigError(f"{self.where}: fusion.class_template: {error}") from None
        if self.fallback_prompt is not None and not (isinstance(self.fallback_prompt, str) and self.fallback_prompt.strip()):
            raise ConfigError(f"{self.where}: fusion.fallback_prompt must be a non-empty prompt string or None, "
                              f"got {self.fallback_prompt!r}")
        allowed = set(inspect.signature(CapeNextFusion).parameters) - {"dim"}
        reject_unknown_settings(options, allowed | set(_PROMPT_KEYS), f"{self.where}: fusion")
        try:
            self.additional_module = CapeNextFusion(dim=self.keypoint_head.support_proj.in_features, **options)
        except ValueError as error:
            raise ConfigError(f"{self.where}: fusion: {error}") from None
        if not self.additional_module.uses_class:
            self.support_kinds = frozenset({"text"})  # image_only reads no class name

    # ------------------------------------------------------------------ building

    def _build_support_encoder(self) -> int:
        dim = super()._build_support_encoder()
        self.image_encoder = self._build_image_encoder()
        tower = self.image_tower
        if tower.dim != dim:
            raise ConfigError(f"{self.where}: the image tower gives {tower.dim}-d embeddings but the keypoint text "
                              f"embeddings are {dim}-d; the fusion module needs one shared space (CLIP's)")
        return dim

    def _build_image_encoder(self) -> ClipTextEncoder | None:
        spec = self.config.get("image_encoder")
        if spec is None:
            if not isinstance(self.text_backbone, ClipTextEncoder):
                raise ConfigError(
                    f"{self.where}: CapeNext embeds the query with a CLIP image tower. Use text_encoder='clip-vit-b32' "
                    f"(its image tower is used, as upstream) or give a separate one: image_encoder=dict(model=..., "
                    f"weights=...) (text encoder here: {self.config.get('text_encoder')!r})")
            return None
        if not isinstance(spec, Mapping):
            raise ConfigError(f"{self.where}: image_encoder must be None or a dict of load_clip arguments "
                              f"({', '.join(_IMAGE_ENCODER_KEYS)}), got {spec!r}")
        options: dict[str, Any] = dict(spec)
        reject_unknown_settings(options, _IMAGE_ENCODER_KEYS, f"{self.where}: image_encoder")
        if options.get("weights") is None and self.config.get("random_init"):
            options.setdefault("random_init", True)
        try:
            return load_clip(**options)
        except WeightsMissingError as error:
            raise WeightsMissingError(f"{self.where}: {str(error).rstrip('.')}. With cape-bench, pass "
                                      f"--cfg-options image_encoder.weights=PATH.") from None

    @property
    def image_tower(self) -> ClipTextEncoder:
        """The frozen CLIP whose ``encode_image`` embeds the query."""
        return self.image_encoder if self.image_encoder is not None else self.text_backbone

    @staticmethod
    def upstream_config_overrides(dims: Mapping[str, Any]) -> dict[str, Any]:
        """``--cfg-options`` for an upstream checkpoint's fusion sizes (`cape_bench.upstream` hook)."""
        fusion = dims.get("fusion") or {}
        overrides: dict[str, Any] = {}
        if "ffn_dim" in fusion:
            overrides["fusion.ffn_dim"] = int(fusion["ffn_dim"])
        if "has_non_linear" in fusion:
            overrides["fusion.dead_non_linear"] = bool(fusion["has_non_linear"])
        return overrides

    # ------------------------------------------------------------------ embeddings

    def image_embedding(self, images: Tensor) -> Tensor:
        """``[B, D]`` L2-normalised CLIP embedding of ImageNet-normalised query crops ``[B, 3, H, W]``.

        The crop is resized bilinearly (align_corners=False) to the tower's input size and fed
        as is: upstream passes the ImageNet-normalised tensor, not a CLIP-normalised one.
        """
        tower = self.image_tower
        size = (tower.image_size, tower.image_size)
        if tuple(images.shape[-2:]) != size:
            images = F.interpolate(images, size=size, mode="bilinear", align_corners=False)
        return tower.encode_image(images)

    def class_prompts(self, class_names: Sequence[str | None], category_ids: Sequence[int] | None = None) -> list[str]:
        """The class prompt of every pair: ``class_prompt(name, class_template)``.

        Raises:
            ConfigError: a pair has no class name and no ``fusion.fallback_prompt`` is set.
        """
        prompts = []
        for item, name in enumerate(class_names):
            if isinstance(name, str) and name.strip():
                prompts.append(class_prompt(name, self.class_template))
            elif self.fallback_prompt is not None:
                prompts.append(self.fallback_prompt)
            else:
                category = f"category {category_ids[item]}" if category_ids is not None else "its category"
                raise ConfigError(
                    f"{self.where}: no class name for query {item} ({category}, got {name!r}); CapeNext encodes "
                    f"{self.class_template!r} with the query's class name (PairBatch.class_names: the MP-100 "
                    f"category name with '_' -> ' '). Pass it (cape-bench predict: --class NAME), or set "
                    f"--cfg-options fusion.fallback_prompt='a photo of an object' to use a generic prompt")
        return prompts

    def class_embeddings(self, prompts: Sequence[str], device: torch.device | str) -> Tensor:
        """``[B, D]`` CLIP text embeddings of the prompts, each distinct prompt encoded once per run."""
        encoder = self.text_backbone if self.text_backbone is not None else self.text_encoder_id
        return self.embedding_cache.encode(encoder, list(prompts)).to(device)

    # ------------------------------------------------------------------ stages

    def encode_query(self, query: QueryBatch) -> Encoded:
        """Backbone features and the CLIP image embedding ``per_item["image_embedding"]`` ``[B, D]``."""
        encoded = super().encode_query(query)
        images = query.images
        encoded.per_item["image_embedding"] = self.image_embedding(images)
        if len(query.category_ids) == images.shape[0]:  # only to name the category in errors
            encoded.per_item["category_id"] = torch.as_tensor(list(query.category_ids), dtype=torch.long,
                                                              device=images.device)
        return encoded

    def refine_support(self, query: Encoded, support: Encoded, pairs: PairBatch) -> Encoded:
        """The support encoding with its joint embeddings refined by ``additional_module``.

        Raises:
            ConfigError: the query encoding has no image embedding, or a class name is missing.
        """
        joint = support.per_keypoint["embeddings"]
        image = query.per_item.get("image_embedding")
        if image is None:
            raise ConfigError(f"{self.where}: the query encoding has no 'image_embedding' (encode it with "
                              f"{type(self).__name__}.encode_query)")
        category = None
        if self.additional_module.uses_class:
            if len(pairs.class_names) != joint.shape[0]:
                raise ConfigError(f"{self.where}: {len(pairs.class_names)} class names for {joint.shape[0]} pairs; "
                                  f"CapeNext needs the query's class name for every pair")
            ids = query.per_item.get("category_id")
            prompts = self.class_prompts(pairs.class_names, None if ids is None else ids.tolist())
            category = self.class_embeddings(prompts, joint.device)
        fused = self.additional_module(joint, image, category)
        return Encoded(dict(support.per_item), {**support.per_keypoint, "embeddings": fused})

    def decode(self, query: Encoded, support: Encoded, pairs: PairBatch) -> Tensor:
        refined = self.refine_support(query, support, pairs)
        return self.run_head(query.per_item["features"], refined, pairs.skeletons).keypoints

    def loss(self, batch: CapeBatch) -> dict[str, Tensor]:
        if batch.target_keypoints is None or batch.target_visible is None:
            raise ConfigError(f"{self.where}: loss needs target_keypoints and target_visible on the batch")
        query = self.encode_query(batch.query)
        support = self.refine_support(query, self.encode_support(batch.support), batch.pairs)
        output = self.run_head(query.per_item["features"], support, batch.pairs.skeletons)
        heatmaps, weight = self.keypoint_targets(batch.target_keypoints, batch.target_visible)
        target = batch.target_keypoints.to(output.layer_outputs.dtype)
        return self.keypoint_head.loss(output, target, weight, heatmaps)
