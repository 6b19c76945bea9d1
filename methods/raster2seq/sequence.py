"""The token sequence a pose is written as, and the bookkeeping between it and keypoint slots.

A pose of L keypoints is ``[<coord>, x_1, y_1, <sep>, ..., <coord>, x_L, y_L, <sep>, <eos>]``
(4L + 1 tokens). The decoder reads it shifted right behind ``<bos>``: input position 0 is
``<bos>`` and input position t >= 1 is token t - 1, so the output at position t predicts token t.
Only keypoints with a support template are written (`compact_order`): a masked or padded slot has
nothing to align to, and leaving it out makes the sequence of a K-slot batch and of the same batch
padded to 100 slots identical.

Classification targets live in one vocabulary: ``num_bins`` coordinate bins, then the special
tokens ``<coord>``, ``<sep>``, ``<eos>`` (`SPECIAL_CLASSES`). ``<bos>`` is an input only.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = [
    "SPECIAL_CLASSES",
    "TOKENS_PER_KEYPOINT",
    "Slot",
    "Targets",
    "compact_order",
    "position_layout",
    "scatter_keypoints",
    "sequence_targets",
]

TOKENS_PER_KEYPOINT = 4
SPECIAL_CLASSES = ("coord", "sep", "eos")


class Slot:
    """What an input position holds: its index in the 4-token group, or BOS for position 0."""

    BOS, COORD, X, Y, SEP = -1, 0, 1, 2, 3


def position_layout(start: int, stop: int, device=None) -> tuple[Tensor, Tensor]:
    """(keypoint group, `Slot`) of input positions ``[start, stop)``; position 0 gets group 0, BOS."""
    positions = torch.arange(start, stop, device=device)
    group = torch.div(positions - 1, TOKENS_PER_KEYPOINT, rounding_mode="floor").clamp(min=0)
    slot = torch.where(positions == 0, Slot.BOS, (positions - 1) % TOKENS_PER_KEYPOINT)
    return group, slot


def compact_order(mask: Tensor) -> tuple[Tensor, Tensor]:
    """Slot indices with the valid slots first (stable), and the valid count per item.

    Args:
        mask: ``[B, K]`` bool, True = the keypoint has a support template.

    Returns:
        ``order [B, K]`` (``order[b, i]`` = the slot of the i-th keypoint in the sequence) and
        ``lengths [B]``.
    """
    order = torch.sort((~mask).to(torch.int8), dim=1, stable=True).indices
    return order, mask.sum(dim=1)


def scatter_keypoints(values: Tensor, order: Tensor, lengths: Tensor, num_slots: int) -> Tensor:
    """Sequence-ordered ``[B, L, 2]`` back to ``[B, K, 2]`` slots; slots outside the sequence are 0."""
    batch, length = values.shape[:2]
    out = values.new_zeros(batch, num_slots, 2)
    in_sequence = torch.arange(length, device=values.device)[None] < lengths[:, None]
    rows = torch.arange(batch, device=values.device)[:, None].expand(batch, length)
    out[rows[in_sequence], order[:, :length][in_sequence]] = values[in_sequence]
    return out


@dataclass
class Targets:
    """Per output position (4L + 1 of them): what the two heads are trained towards.

    Attributes:
        classes: ``[B, T, num_bins + 3]`` target distribution (two-hot on bins for x/y, one-hot
            on a special token otherwise).
        class_weight: ``[B, T]`` 1 where the class loss applies.
        coords: ``[B, T, 2]`` the keypoint (x, y) a coordinate position regresses.
        coord_weight: ``[B, T]`` 1 at the x and y positions of query-visible keypoints.
    """

    classes: Tensor
    class_weight: Tensor
    coords: Tensor
    coord_weight: Tensor


def bilinear_bins(values: Tensor, num_bins: int) -> tuple[Tensor, Tensor, Tensor]:
    """Lower bin, upper bin and the upper bin's weight of normalised values (clamped to [0, 1])."""
    scaled = values.clamp(0, 1) * (num_bins - 1)
    lower = scaled.floor().clamp(max=num_bins - 2)
    return lower.long(), lower.long() + 1, scaled - lower


def sequence_targets(coords: Tensor, visible: Tensor, lengths: Tensor, num_bins: int) -> Targets:
    """Targets of the output positions for sequence-ordered keypoints.

    Args:
        coords: ``[B, L, 2]`` query keypoints in sequence order, normalised to the crop (L >= 1;
            an item without keypoints has length 0 and is trained on ``<eos>`` alone).
        visible: ``[B, L]`` bool, the query keypoint is annotated (its coordinates supervise).
        lengths: ``[B]`` keypoints in each item's sequence (positions past 4 * length are padding).
        num_bins: Coordinate bins of the vocabulary.
    """
    batch, length = coords.shape[:2]
    steps = TOKENS_PER_KEYPOINT * length + 1
    group, slot = position_layout(1, steps + 1, coords.device)  # output position t predicts input token t + 1
    group = group.clamp(max=length - 1)  # the <eos> position reads the last keypoint, unused
    end = TOKENS_PER_KEYPOINT * lengths[:, None]
    positions = torch.arange(steps, device=coords.device)[None]
    is_eos = positions == end
    classes = coords.new_zeros(batch, steps, num_bins + len(SPECIAL_CLASSES))
    special = torch.where(slot == Slot.SEP, num_bins + 1, num_bins)[None].expand(batch, steps)
    special = torch.where(is_eos, num_bins + 2, special)
    is_coordinate = ((slot == Slot.X) | (slot == Slot.Y))[None] & ~is_eos
    values = coords[:, group, (slot == Slot.Y).long()]  # [B, T]: x at X positions, y at Y positions
    lower, upper, weight = bilinear_bins(values, num_bins)
    classes.scatter_(2, special[..., None], (~is_coordinate).to(classes.dtype)[..., None])
    classes.scatter_add_(2, lower[..., None], (is_coordinate * (1 - weight))[..., None])
    classes.scatter_add_(2, upper[..., None], (is_coordinate * weight)[..., None])
    in_sequence = positions <= end
    unknown = is_coordinate & ~visible[:, group]  # an unannotated query keypoint has no x/y target
    class_weight = in_sequence & ~unknown
    coord_weight = is_coordinate & in_sequence & ~unknown
    return Targets(classes, class_weight.to(coords.dtype), coords[:, group], coord_weight.to(coords.dtype))
