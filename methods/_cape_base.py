"""What GraphCape, CapeX and the methods derived from them share: backbone + `CapeHead`.

The family (UPSTREAM_ARCH §0) runs an image backbone on the query, turns the
support into one embedding per keypoint slot plus a keypoint mask, and decodes
with the same keypoint head. Only the support embeddings differ, so a subclass
implements `encode_support` (and `_build_support_encoder` when it owns a
support encoder); building from the config, query encoding, decoding and the
training loss live here, once.

Config keys read here (see `methods/graphcape/configs/graphcape_s.py`):
    backbone, backbone_options, backbone_weights, random_init, head, heatmap,
    input_size.
"""
from __future__ import annotations

import inspect
from typing import Any, ClassVar

from torch import Tensor

from cape_bench.errors import ConfigError, reject_unknown_settings
from cape_bench.method import MAX_KEYPOINTS, CapeBatch, CapeMethod, Encoded, PairBatch, QueryBatch
from cape_bench.nn.backbones import ImageBackbone, backbone_from_config
from cape_bench.nn.head import CapeHead, HeadOutput
from cape_bench.nn.heatmaps import keypoint_heatmaps

__all__ = ["CapeHeadMethod"]

# CapeHead arguments a method fixes itself; everything else may be set in the config's `head` dict.
_HEAD_FIXED = ("in_channels", "support_dim", "support_proj_name")


class CapeHeadMethod(CapeMethod):
    """A backbone on the query image and `CapeHead` over per-keypoint support embeddings.

    Subclasses set `support_proj_name` (the head's state-dict name for the
    support projection), implement `encode_support` returning
    ``per_keypoint={"embeddings": [B, K, D], "mask": [B, K] bool}``, and return
    D from `_build_support_encoder`.

    Attributes:
        backbone: The image backbone (stride-16 map).
        keypoint_head: The `CapeHead`.
    """

    method_name: ClassVar[str] = "cape-head"
    support_proj_name: ClassVar[str] = "query_proj"

    def __init__(self, config: dict | None = None) -> None:
        super().__init__(config)
        heatmap = dict(self.config.get("heatmap") or {})
        self.heatmap_size = int(heatmap.pop("size", 64))
        self.heatmap_sigma = float(heatmap.pop("sigma", 1.0))
        if heatmap:
            raise ConfigError(f"{self.where}: heatmap has no setting {', '.join(sorted(heatmap))}; it takes size, sigma")
        # Registration order = upstream top-level prefixes: backbone, [text_backbone,] keypoint_head.
        self.backbone = self._build_backbone()
        support_dim = self._build_support_encoder()
        self.keypoint_head = CapeHead(
            in_channels=self.backbone.out_channels,
            support_dim=support_dim,
            support_proj_name=self.support_proj_name,
            **self._head_options(),
        )

    # ------------------------------------------------------------------ building

    def _build_backbone(self) -> ImageBackbone:
        return backbone_from_config(self.config, self.input_size, self.where)

    def _build_support_encoder(self) -> int:
        """Build and register what encodes the support, if anything; return the embedding width D."""
        return self.backbone.out_channels

    def _head_options(self) -> dict[str, Any]:
        options = dict(self.config.get("head") or {})
        allowed = set(inspect.signature(CapeHead).parameters) - set(_HEAD_FIXED)
        reject_unknown_settings(options, allowed, f"{self.where}: head")
        return options

    # ------------------------------------------------------------------ helpers

    def check_keypoint_count(self, num_keypoints: int) -> None:
        """Raise ConfigError above the 100 slots upstream pads to (UPSTREAM_ARCH §6)."""
        if num_keypoints > MAX_KEYPOINTS:
            raise ConfigError(f"{self.where}: {num_keypoints} keypoint slots, but CAPE methods support at most "
                              f"{MAX_KEYPOINTS} (MP-100's max_kpt_num); split the category's keypoints")

    def keypoint_targets(self, keypoints: Tensor, visible: Tensor) -> tuple[Tensor, Tensor]:
        """MSRA target heatmaps ``[B, K, H, W]`` and target weights ``[B, K]`` of normalised keypoints.

        The weight is the visibility, zeroed for keypoints whose Gaussian falls
        outside the heatmap: upstream's ``target_weight`` (mmpose TopDownGenerateTarget).
        """
        return keypoint_heatmaps(keypoints * self.input_size, visible, self.input_size, self.heatmap_size,
                                 self.heatmap_sigma)

    def run_head(self, features: Tensor, support: Encoded, skeletons) -> HeadOutput:
        embeddings, mask = support.per_keypoint["embeddings"], support.per_keypoint["mask"]
        self.check_keypoint_count(embeddings.shape[1])
        return self.keypoint_head(features, embeddings, mask, skeletons)

    # ------------------------------------------------------------------ stages

    def encode_query(self, query: QueryBatch) -> Encoded:
        if query.images is None:
            raise ConfigError(f"{self.where}: needs the query images (QueryBatch.images is None)")
        return Encoded(per_item={"features": self.backbone(query.images)})

    def decode(self, query: Encoded, support: Encoded, pairs: PairBatch) -> Tensor:
        # The support's own mask (from its heatmap target weights), not pairs.keypoint_mask: this is
        # what upstream feeds the head, and CapeX masks with the first shot only.
        return self.run_head(query.per_item["features"], support, pairs.skeletons).keypoints

    def loss(self, batch: CapeBatch) -> dict[str, Tensor]:
        if batch.target_keypoints is None or batch.target_visible is None:
            raise ConfigError(f"{self.where}: loss needs target_keypoints and target_visible on the batch")
        output = self.run_head(self.encode_query(batch.query).per_item["features"],
                               self.encode_support(batch.support), batch.pairs.skeletons)
        heatmaps, weight = self.keypoint_targets(batch.target_keypoints, batch.target_visible)
        target = batch.target_keypoints.to(output.layer_outputs.dtype)
        # CapeHead.loss multiplies `weight` by the support mask (upstream: target_weight_q * mask_s).
        return self.keypoint_head.loss(output, target, weight, heatmaps)

    def parameter_counts(self) -> dict[str, int]:
        """``total``, ``trainable`` (requires grad) and ``frozen`` parameter counts."""
        total = sum(p.numel() for p in self.parameters())
        trainable = sum(p.numel() for p in self.parameters() if p.requires_grad)
        return {"total": total, "trainable": trainable, "frozen": total - trainable}
