"""The interface every CAPE method implements, in separable stages.

A split has ~2,000 distinct instances but 60,000 (support, query) pairs, so the
evaluation runner encodes each query crop once (`encode_query`), each support
once (`encode_support`: support-image features, or the category's keypoint
text embeddings), and runs only `decode` per pair, many pairs per batch. A
method that cannot separate its stages sets `separable = False` and
implements `predict` on whole pairs; the runner never asks a method's name.

Coordinates: keypoints in and out are (x, y) normalised to the input crop,
i.e. crop pixels / input_size, in [0, 1].
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import ClassVar

import torch
from torch import nn

from cape_bench.errors import ConfigError

SUPPORT_KINDS = frozenset({"image", "keypoints", "text", "class", "graph"})
MAX_KEYPOINTS = 100


@dataclass
class Encoded:
    """Stage output: tensors with a leading batch dim.

    `per_keypoint` tensors are [B, K, ...] and are zero-padded along K by the
    runner when pairs of different categories share a batch; `per_item`
    tensors are [B, ...].
    """

    per_item: dict[str, torch.Tensor] = field(default_factory=dict)
    per_keypoint: dict[str, torch.Tensor] = field(default_factory=dict)

    def select(self, rows: torch.Tensor) -> "Encoded":
        return Encoded(
            {k: v.index_select(0, rows.to(v.device)) for k, v in self.per_item.items()},
            {k: v.index_select(0, rows.to(v.device)) for k, v in self.per_keypoint.items()},
        )

    def padded(self, num_keypoints: int) -> "Encoded":
        """Zero-pad (never crop) every per-keypoint tensor to `num_keypoints` slots."""
        padded = {}
        for name, value in self.per_keypoint.items():
            missing = num_keypoints - value.shape[1]
            if missing < 0:
                raise ConfigError(f"cannot pad {name} with {value.shape[1]} keypoints down to {num_keypoints}")
            if missing:
                value = torch.cat([value, value.new_zeros((value.shape[0], missing, *value.shape[2:]))], dim=1)
            padded[name] = value
        return Encoded(dict(self.per_item), padded)

    def to(self, device) -> "Encoded":
        return Encoded({k: v.to(device) for k, v in self.per_item.items()}, {k: v.to(device) for k, v in self.per_keypoint.items()})

    @staticmethod
    def cat(parts: list["Encoded"]) -> "Encoded":
        if not parts:
            return Encoded()
        width = max((v.shape[1] for part in parts for v in part.per_keypoint.values()), default=0)
        parts = [part.padded(width) for part in parts]
        return Encoded(
            {k: torch.cat([p.per_item[k] for p in parts]) for k in parts[0].per_item},
            {k: torch.cat([p.per_keypoint[k] for p in parts]) for k in parts[0].per_keypoint},
        )


@dataclass
class QueryBatch:
    """Query crops [B, 3, H, W] (None for a method with `uses_query_image = False`)."""

    images: torch.Tensor | None
    category_ids: list[int]


@dataclass
class SupportBatch:
    """Everything a support can offer; a method reads what it declares in `support_kinds`.

    images: [B, S, 3, H, W] crops of the S shots, or None when the method takes no image.
    keypoints: [B, S, K, 2] normalised crop coordinates; visible: [B, S, K] bool.
    keypoint_texts: per item, the category's K descriptions (unpadded).
    """

    images: torch.Tensor | None
    keypoints: torch.Tensor
    visible: torch.Tensor
    keypoint_texts: list[list[str]]
    skeletons: list[list[tuple[int, int]]]
    category_ids: list[int]


@dataclass
class PairBatch:
    """What `decode` needs per (support, query) pair besides the two encodings.

    keypoint_mask: [B, K] bool, support visibility (product over shots; a
    method may re-derive it from the support encoding if it masks otherwise).
    class_names: the query's class name per pair (the robustness protocol may
    substitute it).
    """

    keypoint_mask: torch.Tensor
    skeletons: list[list[tuple[int, int]]]
    class_names: list[str]


@dataclass
class CapeBatch:
    """A batch of whole pairs, for training and for the joint (naive) path."""

    query: QueryBatch
    support: SupportBatch
    pairs: PairBatch
    target_keypoints: torch.Tensor | None = None
    target_visible: torch.Tensor | None = None

    def to(self, device) -> "CapeBatch":
        move = lambda t: None if t is None else t.to(device)  # noqa: E731
        return replace(
            self,
            query=replace(self.query, images=move(self.query.images)),
            support=replace(self.support, images=move(self.support.images), keypoints=move(self.support.keypoints), visible=move(self.support.visible)),
            pairs=replace(self.pairs, keypoint_mask=move(self.pairs.keypoint_mask)),
            target_keypoints=move(self.target_keypoints),
            target_visible=move(self.target_visible),
        )


class CapeMethod(nn.Module):
    """Base class of every method plugin.

    Class attributes a method sets:
        support_kinds: which parts of the support it consumes (`SUPPORT_KINDS`).
        separable: whether encode_query / encode_support / decode are independent.
        pads_keypoints_dynamically: whether results are unchanged when K is the
            episode's keypoint count instead of the fixed 100 slots.
        trainable: whether `loss` is implemented.
        uses_query_image: False lets the runner skip decoding query images.
    """

    support_kinds: ClassVar[frozenset[str]] = frozenset()
    separable: ClassVar[bool] = True
    pads_keypoints_dynamically: ClassVar[bool] = True
    trainable: ClassVar[bool] = True
    uses_query_image: ClassVar[bool] = True
    input_size: int = 256
    method_name: ClassVar[str] = "method"

    def __init__(self, config: dict | None = None) -> None:
        super().__init__()
        self.config = dict(config or {})
        self.input_size = int(self.config.get("input_size", 256))

    @property
    def where(self) -> str:
        """"method 'x', config 'y'": the prefix of every error message."""
        return f"method {self.method_name!r}, config {self.config.get('config_name', '<dict>')!r}"

    def encode_query(self, query: QueryBatch) -> Encoded:
        """Support-independent query features (backbone map, image embedding)."""
        raise NotImplementedError(f"{type(self).__name__} does not implement encode_query")

    def encode_support(self, support: SupportBatch) -> Encoded:
        """Support features: pooled image features or keypoint text embeddings."""
        raise NotImplementedError(f"{type(self).__name__} does not implement encode_support")

    def decode(self, query: Encoded, support: Encoded, pairs: PairBatch) -> torch.Tensor:
        """[B, K, 2] predicted keypoints, normalised to the query crop."""
        raise NotImplementedError(f"{type(self).__name__} does not implement decode")

    def predict(self, batch: CapeBatch) -> torch.Tensor:
        """The joint path: every stage on whole pairs."""
        return self.decode(self.encode_query(batch.query), self.encode_support(batch.support), batch.pairs)

    def loss(self, batch: CapeBatch) -> dict[str, torch.Tensor]:
        raise NotImplementedError(f"{type(self).__name__} has nothing to train")

    @property
    def device(self) -> torch.device:
        for tensor in self.parameters():
            return tensor.device
        return torch.device("cpu")
