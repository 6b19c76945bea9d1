"""Method-DLF (Li & Liu): an image-support and a text-support path, fused at the decision level.

The paper (section 3.2.2, Fig. 5, eq. 5 and 9; Table 5) publishes no code. What is built here:

* One SwinV2 backbone encodes the query and the support crops (shared).
* Text path ("imgXtxt"): CapeX-S unchanged: gte keypoint-text embeddings, ``keypoint_head``
  (``text_proj``, encoder, proposal generator, graph decoder), first-shot mask.
* Image path ("imgXimg"): GraphCape's pooled support-keypoint features, its own
  ``image_path.query_proj`` (768 -> 256) and ``image_path.transformer`` (encoder, proposal
  generator, graph decoder), product-over-shots mask.
* The two paths share the query projection ``keypoint_head.input_proj``, the positional
  encodings and the per-layer offset heads ``keypoint_head.kpt_branch``: one decoding head
  maps both paths' decoder features to coordinates (the "unified graph decoder"), so their
  decisions live in one space.
* Decision: ``fusion.output = "mean"`` (default) averages the two final predictions;
  ``"text"`` / ``"image"`` output one path.
* Loss (eq. 9): both paths' heatmap, proposal and per-layer L1 losses (UPSTREAM_ARCH §8), plus
  ``fusion.consistency_weight`` x the consistency loss (eq. 5) between the two paths' final
  predictions on the keypoints valid in the text path.

Parameters: CapeX-S (195,518,504) + encoder 1,975,296 + proposal generator 197,504 + graph
decoder 5,853,696 + 768->256 projection 196,864 = 203,741,864, the published 203.742 M.
"""
from __future__ import annotations

from typing import Any

from cape_bench.methods.capex.model import CapeX
from cape_bench.methods.graphcape.model import GraphCape
from torch import Tensor, nn

from cape_bench.errors import ConfigError
from cape_bench.method import CapeBatch, Encoded, PairBatch, SupportBatch
from cape_bench.nn.head import CapeEncoderDecoder, HeadOutput, xavier_init
from cape_bench.nn.losses import keypoint_normalizer

__all__ = ["FusionDLF", "consistency_loss", "OUTPUTS", "CONSISTENCY_KINDS"]

OUTPUTS = ("mean", "text", "image")
CONSISTENCY_KINDS = ("mse", "l2")

# CapeEncoderDecoder arguments, taken from the head config (CapeHead defaults where unset).
_PATH_KEYS = dict(d_model=256, nhead=8, num_encoder_layers=3, num_decoder_layers=3, dim_feedforward=768,
                  dropout=0.1, similarity_proj_dim=256, dynamic_proj_dim=128, graph_ffn=True)


def consistency_loss(text_points: Tensor, image_points: Tensor, text_mask: Tensor, kind: str = "mse") -> Tensor:
    """Fusion paper eq. 5: per sample, the mean over text-valid keypoints of the distance between paths.

    ``mse``: squared Euclidean distance of the normalised (x, y) predictions (the paper's text:
    "defined as the mean squared error"); ``l2``: the Euclidean distance (eq. 5 as printed).
    Samples are averaged; a sample without valid keypoints contributes 0.

    Args:
        text_points: ``[B, K, 2]`` text-path prediction.
        image_points: ``[B, K, 2]`` image-path prediction.
        text_mask: ``[B, K]`` keypoints valid in the text path.
        kind: ``"mse"`` or ``"l2"``.

    Returns:
        Scalar tensor.
    """
    squared = (text_points - image_points.to(text_points.dtype)).pow(2).sum(-1)
    # eps keeps the gradient of sqrt finite when the two paths agree exactly.
    distance = squared if kind == "mse" else (squared + 1e-12).sqrt()
    weight = text_mask.to(distance.dtype)
    return ((distance * weight).sum(-1) / keypoint_normalizer(weight)).mean()


class DecisionPath(nn.Module):
    """The image path's own parts: support projection and encoder/proposal/decoder stack."""

    def __init__(self, support_dim: int, **transformer: Any) -> None:
        super().__init__()
        self.query_proj = nn.Linear(support_dim, transformer["d_model"])
        self.transformer = CapeEncoderDecoder(**transformer)
        xavier_init(self)  # as CapeHead.init_weights


class FusionDLF(CapeX):
    """Method-DLF; config keys: see `methods/fusion_dlf/configs/fusion_dlf.py`.

    Attributes:
        keypoint_head: The text path's head (CapeX-S's), whose ``input_proj`` and ``kpt_branch``
            the image path shares.
        image_path: `DecisionPath` of the image path.
    """

    method_name = "fusion-dlf"
    support_kinds = frozenset({"image", "text"})
    support_proj_name = "text_proj"

    def __init__(self, config: dict | None = None) -> None:
        super().__init__(config)
        options = dict(self.config.get("fusion") or {})
        self.output = options.pop("output", "mean")
        self.consistency_weight = float(options.pop("consistency_weight", 1.0))
        self.consistency_kind = options.pop("consistency", "mse")
        if options:
            raise ConfigError(f"{self.where}: fusion has no setting {', '.join(sorted(options))}; it takes "
                              f"output, consistency_weight, consistency")
        if self.output not in OUTPUTS:
            raise ConfigError(f"{self.where}: fusion.output={self.output!r}; expected one of {', '.join(OUTPUTS)}")
        if self.consistency_kind not in CONSISTENCY_KINDS:
            raise ConfigError(f"{self.where}: fusion.consistency={self.consistency_kind!r}; expected one of "
                              f"{', '.join(CONSISTENCY_KINDS)}")
        head = {**_PATH_KEYS, **{k: v for k, v in (self.config.get("head") or {}).items() if k in _PATH_KEYS}}
        self.image_path = DecisionPath(self.backbone.out_channels, **head)

    # ------------------------------------------------------------------ stages

    def encode_support(self, support: SupportBatch) -> Encoded:
        """Text path: ``embeddings`` and ``mask`` (CapeX, first shot); image path: ``image_embeddings``
        and ``image_mask`` (GraphCape pooling, product over shots)."""
        text = super().encode_support(support)
        image = GraphCape.encode_support(self, support)
        return Encoded(per_keypoint={**text.per_keypoint, "image_embeddings": image.per_keypoint["embeddings"],
                                     "image_mask": image.per_keypoint["mask"]})

    def path_outputs(self, features: Tensor, support: Encoded, skeletons) -> tuple[HeadOutput, HeadOutput]:
        """``(text_path, image_path)`` head outputs on the same query features."""
        text = self.run_head(features, support, skeletons)
        embeddings, mask = support.per_keypoint["image_embeddings"], support.per_keypoint["image_mask"]
        tokens = self.image_path.query_proj(embeddings * mask[..., None].to(embeddings.dtype))
        image = self.keypoint_head.decode_tokens(features, tokens, mask, skeletons,
                                                 transformer=self.image_path.transformer)
        return text, image

    def decide(self, text: HeadOutput, image: HeadOutput) -> Tensor:
        """The decision-level fusion of the two final predictions (``fusion.output``)."""
        if self.output == "text":
            return text.keypoints
        if self.output == "image":
            return image.keypoints
        return (text.keypoints + image.keypoints) / 2

    def decode(self, query: Encoded, support: Encoded, pairs: PairBatch) -> Tensor:
        return self.decide(*self.path_outputs(query.per_item["features"], support, pairs.skeletons))

    def loss(self, batch: CapeBatch) -> dict[str, Tensor]:
        """Both paths' head losses (image path prefixed ``image_``) and the weighted ``consistency_loss``."""
        if batch.target_keypoints is None or batch.target_visible is None:
            raise ConfigError(f"{self.where}: loss needs target_keypoints and target_visible on the batch")
        support = self.encode_support(batch.support)
        text, image = self.path_outputs(self.encode_query(batch.query).per_item["features"], support,
                                        batch.pairs.skeletons)
        heatmaps, weight = self.keypoint_targets(batch.target_keypoints, batch.target_visible)
        target = batch.target_keypoints.to(text.layer_outputs.dtype)
        losses = self.keypoint_head.loss(text, target, weight, heatmaps)
        for name, value in self.keypoint_head.loss(image, target, weight, heatmaps).items():
            losses[f"image_{name}"] = value
        losses["consistency_loss"] = self.consistency_weight * consistency_loss(
            text.keypoints, image.keypoints, text.keypoint_mask, self.consistency_kind)
        return losses
