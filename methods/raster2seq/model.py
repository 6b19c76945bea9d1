"""Raster2Seq for CAPE: the query pose written as a token sequence by a decoder (report sections 5.1-5.6).

Stages: `encode_query` runs the backbone and projects the map to the model width (support-free,
cached per query by the runner); `encode_support` builds the template (the support instance's
keypoints, mean over shots) and encodes the pose graph; `decode` generates the sequence greedily
for each (query, support) pair. Only keypoints with a template are written, so the runner's K-slot
fast path and 100-slot naive path decode the same sequences.
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from functools import partial

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cape_bench.errors import ConfigError, reject_unknown_settings
from cape_bench.method import (
    MAX_KEYPOINTS,
    CapeBatch,
    CapeMethod,
    Encoded,
    PairBatch,
    QueryBatch,
    SupportBatch,
)
from cape_bench.methods.raster2seq.decoder import (
    ImageAttention,
    LayerMemory,
    SequenceDecoder,
)
from cape_bench.methods.raster2seq.deformable import MultiScaleDeformableAttention
from cape_bench.methods.raster2seq.embedding import TokenEmbedding
from cape_bench.methods.raster2seq.generation import greedy_decode
from cape_bench.methods.raster2seq.sequence import (
    SPECIAL_CLASSES,
    TOKENS_PER_KEYPOINT,
    compact_order,
    scatter_keypoints,
    sequence_targets,
)
from cape_bench.methods.raster2seq.support_encoder import PoseGraphEncoder
from cape_bench.nn.backbones import ImageBackbone, backbone_from_config

__all__ = ["Raster2Seq", "Raster2SeqSettings"]


@dataclass(frozen=True)
class Raster2SeqSettings:
    """The config's `model` section (defaults: the report's full size).

    Attributes:
        d_model: Width of every token.
        nhead: Heads of every attention.
        num_decoder_layers: Sequence decoder layers.
        num_support_layers: Pose-graph encoder layers.
        dim_feedforward: FFN width (decoder and support encoder).
        dropout: Dropout everywhere.
        num_bins: Coordinate bins of the vocabulary and the embedding table.
        image_attention: ``"standard"`` (every map cell) or ``"deformable"`` (`deformable`).
        deformable_levels: Pyramid levels of deformable attention.
        deformable_points: Sampling points per head and level.
    """

    d_model: int = 256
    nhead: int = 8
    num_decoder_layers: int = 6
    num_support_layers: int = 3
    dim_feedforward: int = 1024
    dropout: float = 0.1
    num_bins: int = 512
    image_attention: str = "standard"
    deformable_levels: int = 3
    deformable_points: int = 4

    @classmethod
    def from_config(cls, section: dict | None, where: str) -> Raster2SeqSettings:
        values = dict(section or {})
        reject_unknown_settings(values, {f.name for f in fields(cls)}, f"{where}: model")
        settings = cls(**values)
        if settings.image_attention not in ("standard", "deformable"):
            raise ConfigError(f"{where}: model.image_attention={settings.image_attention!r}; use 'standard' or 'deformable'")
        if settings.num_bins < 2:
            raise ConfigError(f"{where}: model.num_bins must be >= 2, got {settings.num_bins}")
        return settings


class Raster2Seq(CapeMethod):
    """Raster2Seq; config keys: see `methods/raster2seq/configs/raster2seq.py`.

    Attributes:
        kv_cache: Decode with the self-attention KV cache (config `kv_cache`); the results are
            the same without it, only slower.
    """

    method_name = "raster2seq"
    support_kinds = frozenset({"keypoints", "graph"})

    def __init__(self, config: dict | None = None) -> None:
        super().__init__(config)
        self.settings = s = Raster2SeqSettings.from_config(self.config.get("model"), self.where)
        weights = dict(self.config.get("loss_weights") or {})
        self.token_weight, self.coord_weight = float(weights.pop("token", 1.0)), float(weights.pop("coord", 5.0))
        if weights:
            raise ConfigError(f"{self.where}: loss_weights has no entry {', '.join(sorted(weights))}; it takes token, coord")
        self.kv_cache = bool(self.config.get("kv_cache", True))
        self.backbone = self._build_backbone()
        self.input_proj = nn.Conv2d(self.backbone.out_channels, s.d_model, kernel_size=1)
        self.support_encoder = PoseGraphEncoder(s.d_model, s.nhead, s.num_support_layers, s.dim_feedforward, s.dropout)
        if s.image_attention == "deformable":
            image_attention = partial(MultiScaleDeformableAttention, s.d_model, s.nhead, s.deformable_levels, s.deformable_points)
        else:
            image_attention = partial(ImageAttention, s.d_model, s.nhead, s.dropout)
        self.embedding = TokenEmbedding(s.d_model, s.num_bins)
        self.decoder = SequenceDecoder(s.d_model, s.nhead, s.num_decoder_layers, s.dim_feedforward, s.dropout, image_attention)
        self.class_head = nn.Linear(s.d_model, s.num_bins + len(SPECIAL_CLASSES))
        self.coord_head = nn.Linear(s.d_model, 2)

    def _build_backbone(self) -> ImageBackbone:
        return backbone_from_config(self.config, self.input_size, self.where)

    # ------------------------------------------------------------------ stages

    def encode_query(self, query: QueryBatch) -> Encoded:
        if query.images is None:
            raise ConfigError(f"{self.where}: needs the query images (QueryBatch.images is None)")
        return Encoded(per_item={"image": self.input_proj(self.backbone(query.images))})

    def encode_support(self, support: SupportBatch) -> Encoded:
        """Pose-graph tokens ``[B, K, d]``, their mask ``[B, K]`` and the graph summary ``[B, d]``.

        The template is the support instance's keypoints (crop-normalised, i.e. normalised to the
        support box), averaged over the shots; a keypoint has one when it is visible in every shot.
        """
        num_kpt = support.keypoints.shape[2]
        if num_kpt > MAX_KEYPOINTS:
            raise ConfigError(f"{self.where}: {num_kpt} keypoint slots, but CAPE methods support at most "
                              f"{MAX_KEYPOINTS} (MP-100's max_kpt_num); split the category's keypoints")
        mask = support.visible.all(dim=1)
        template = support.keypoints.mean(dim=1) * mask[..., None].to(support.keypoints.dtype)
        summary, keypoints = self.support_encoder(template, mask, support.skeletons)
        return Encoded(per_item={"summary": summary}, per_keypoint={"embeddings": keypoints, "mask": mask})

    def decode(self, query: Encoded, support: Encoded, pairs: PairBatch) -> Tensor:
        # The support's own mask (visible in every shot), which equals pairs.keypoint_mask.
        memories, keypoints, order, lengths = self._prepare(query, support)
        coords = greedy_decode(self.decoder, self.embedding, self._regress, memories, keypoints, self.kv_cache)
        return scatter_keypoints(coords, order, lengths, order.shape[1])

    def loss(self, batch: CapeBatch) -> dict[str, Tensor]:
        """Teacher-forced sequence loss: 1.0 x token CE + 5.0 x L1 (normalised units), every layer."""
        if batch.target_keypoints is None or batch.target_visible is None:
            raise ConfigError(f"{self.where}: loss needs target_keypoints and target_visible on the batch")
        support = self.encode_support(batch.support)
        memories, keypoints, order, lengths = self._prepare(self.encode_query(batch.query), support)
        length = keypoints.shape[1]
        in_order = order[:, :length]
        target = batch.target_keypoints.float().gather(1, in_order[..., None].expand(-1, -1, 2))
        in_sequence = torch.arange(length, device=order.device)[None] < lengths[:, None]
        visible = batch.target_visible.gather(1, in_order) & in_sequence
        # An unannotated query keypoint has no value to feed back; the support's stands in for it.
        template = batch.support.keypoints.mean(dim=1).float().gather(1, in_order[..., None].expand(-1, -1, 2))
        inputs = torch.where(visible[..., None], target, template)
        outputs, _ = self.decoder(self.embedding(0, TOKENS_PER_KEYPOINT * length + 1, inputs, keypoints), memories)
        targets = sequence_targets(target, visible, lengths, self.settings.num_bins)
        token_loss = coord_loss = 0.0
        for hidden in outputs:
            logits = self.class_head(hidden)
            entropy = F.cross_entropy(logits.flatten(0, 1), targets.classes.flatten(0, 1).to(logits.dtype), reduction="none")
            token_loss = token_loss + _weighted_mean(entropy.view_as(targets.class_weight), targets.class_weight)
            distance = (self._regress(hidden) - targets.coords).abs().mean(-1)
            coord_loss = coord_loss + _weighted_mean(distance, targets.coord_weight)
        return {"loss_token": self.token_weight * token_loss, "loss_coord": self.coord_weight * coord_loss}

    # ------------------------------------------------------------------ helpers

    def _regress(self, hidden: Tensor) -> Tensor:
        """The regression head: ``[..., d]`` -> normalised ``[..., 2]`` (sigmoid; x input_size = pixels).

        In fp32 even under bf16 autocast: bf16 keeps 8 mantissa bits, about 2 pixels at 512.
        """
        with torch.autocast(hidden.device.type, enabled=False):
            return self.coord_head(hidden.float()).sigmoid()

    def _prepare(self, query: Encoded, support: Encoded) -> tuple[list[LayerMemory], Tensor, Tensor, Tensor]:
        """Decoder memories, sequence-ordered keypoint tokens ``[B, L, d]`` (L >= 1), order and lengths."""
        embeddings, mask = support.per_keypoint["embeddings"], support.per_keypoint["mask"]
        order, lengths = compact_order(mask)
        length = max(int(lengths.max()), 1)
        keypoints = embeddings.gather(1, order[:, :length, None].expand(-1, -1, embeddings.shape[-1]))
        summary = support.per_item["summary"][:, None]
        memory = torch.cat([summary, embeddings], dim=1)
        memory_mask = torch.cat([mask.new_ones(mask.shape[0], 1), mask], dim=1)
        return self.decoder.prepare(query.per_item["image"], memory, memory_mask), keypoints, order, lengths


def _weighted_mean(values: Tensor, weight: Tensor) -> Tensor:
    return (values * weight).sum() / weight.sum().clamp(min=1)
