"""Method-FLF (Li & Liu): support-image keypoint features and keypoint texts fused by CMAA.

The paper (sections 3.1-3.2, eq. 1-4; Table 5) publishes no code. What is built here:

1. The support crops go through the query's SwinV2 backbone and are pooled at the support
   keypoints exactly as GraphCape does (heatmap-weighted average, mean over shots).
2. The keypoints' descriptions are embedded by the frozen text encoder exactly as CapeX does
   (gte-base-en-v1.5: CLS, L2-normalised).
3. Both ``[B, K, 768]`` sets are projected to the head width by ONE ``keypoint_head.text_proj``
   (768 -> 256; SwinV2-S and gte-base are both 768-d), masked slots zeroed first, as the head does.
4. CMAA (`cape_bench.nn.fusion.CrossModalAlignmentAttention`): the dominant modality's tokens
   attend to the other's, ``LayerNorm(x + gamma * softmax(x W_Q (y W_K)^T / sqrt(256)) y W_V)``.
   ``fusion.direction = "text_into_image"`` (default, eq. 3-4: visual tokens stay the residual)
   or ``"image_into_text"``.
5. The fused tokens go to CapeX-S's keypoint head (encoder, proposals, graph decoder).

Parameters: CapeX-S (195,518,504) + three 256x256 matrices + gamma = 195,715,113, the published
195.715 M; see the README for why this is the only reading that count allows.
"""
from __future__ import annotations

from torch import Tensor

from cape_bench.errors import ConfigError
from cape_bench.method import Encoded, SupportBatch
from cape_bench.methods.capex.model import CapeX
from cape_bench.methods.graphcape.model import GraphCape
from cape_bench.nn.fusion import CrossModalAlignmentAttention
from cape_bench.nn.head import HeadOutput

__all__ = ["FusionFLF", "DIRECTIONS"]

DIRECTIONS = ("text_into_image", "image_into_text")
"""Which modality keeps the residual: ``text_into_image`` = visual tokens (paper eq. 3-4)."""


class FusionFLF(CapeX):
    """Method-FLF; config keys: see `methods/fusion_flf/configs/fusion_flf.py`.

    Attributes:
        cmaa: The `CrossModalAlignmentAttention` (``query_proj``, ``key_proj``, ``value_proj``, ``gamma``).
        direction: One of `DIRECTIONS`.
    """

    method_name = "fusion-flf"
    support_kinds = frozenset({"image", "text"})
    support_proj_name = "text_proj"

    def __init__(self, config: dict | None = None) -> None:
        super().__init__(config)
        options = dict(self.config.get("fusion") or {})
        self.direction = options.pop("direction", "text_into_image")
        gamma_init = float(options.pop("gamma_init", 0.0))
        if options:
            raise ConfigError(f"{self.where}: fusion has no setting {', '.join(sorted(options))}; it takes "
                              f"direction, gamma_init")
        if self.direction not in DIRECTIONS:
            raise ConfigError(f"{self.where}: fusion.direction={self.direction!r}; expected one of "
                              f"{', '.join(DIRECTIONS)}")
        text_dim, image_dim = self.keypoint_head.support_proj.in_features, self.backbone.out_channels
        if text_dim != image_dim:
            raise ConfigError(
                f"{self.where}: Method-FLF projects image keypoint features and text embeddings with one "
                f"text_proj, so they need the same width; backbone {self.config.get('backbone')!r} gives "
                f"{image_dim}, text encoder {self.config.get('text_encoder')!r} gives {text_dim}")
        self.cmaa = CrossModalAlignmentAttention(self.keypoint_head.d_model, gamma_init=gamma_init)

    def encode_support(self, support: SupportBatch) -> Encoded:
        """Pooled image features ``embeddings`` and ``text_embeddings`` ``[B, K, 768]``, and the ``mask``.

        The mask is GraphCape's (product over shots of the heatmap target weights), shared by
        both modalities; only masked-in keypoints get a description embedding.
        """
        image = GraphCape.encode_support(self, support)  # GraphCape pooling, unchanged
        mask = image.per_keypoint["mask"]
        text = self.keypoint_text_embeddings(support.keypoint_texts, mask, support.category_ids)
        return Encoded(per_keypoint={**image.per_keypoint, "text_embeddings": text})

    def fused_tokens(self, support: Encoded) -> Tensor:
        """``[B, K, d_model]`` CMAA output over the two projected modalities."""
        mask = support.per_keypoint["mask"]
        weight = mask[..., None].to(support.per_keypoint["embeddings"].dtype)
        project = self.keypoint_head.support_proj
        image = project(support.per_keypoint["embeddings"] * weight)
        text = project(support.per_keypoint["text_embeddings"].to(weight.dtype) * weight)
        if self.direction == "text_into_image":
            return self.cmaa(image, text, mask)
        return self.cmaa(text, image, mask)

    def run_head(self, features: Tensor, support: Encoded, skeletons) -> HeadOutput:
        self.check_keypoint_count(support.per_keypoint["mask"].shape[1])
        return self.keypoint_head.decode_tokens(features, self.fused_tokens(support), support.per_keypoint["mask"],
                                                skeletons)
