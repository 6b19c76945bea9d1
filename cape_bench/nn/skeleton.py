"""Skeleton graphs as the two-kernel adjacency used by the GCN FFN (UPSTREAM_ARCH §5).

Kernel 0 is the self-loop on valid keypoints; kernel 1 is the symmetrised,
masked, row-normalised skeleton. The GCN contracts over the FIRST node index,
so node w receives sum_v A[v, w] x_v with A[v, w] = 1/deg(v): the transpose of
the usual mean aggregation. That orientation is in the checkpoints and is kept.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = ["adjacency_from_skeleton"]


def adjacency_from_skeleton(skeletons: Sequence[Sequence[Sequence[int]]], keypoint_mask: Tensor) -> Tensor:
    """Build ``[diag(valid), A_norm]`` for every sample.

    Steps, as upstream ``adj_from_skeleton``: a 1 at every [i, j] edge;
    symmetrise with max(A, A^T); zero the rows and columns of masked keypoints;
    row-normalise (A / A.sum(-1), NaN -> 0); stack with the diagonal of the mask.

    Args:
        skeletons: One edge list per sample; edges are 0-based ``(i, j)`` pairs.
            An empty list means no edges.
        keypoint_mask: ``[B, K]`` bool, True = valid keypoint.

    Returns:
        Float32 tensor ``[B, 2, K, K]`` on the mask's device.

    Raises:
        ValueError: If the number of edge lists differs from B, or an edge is not
            a pair of indices in ``[0, K)``.
    """
    batch, num_kpt = keypoint_mask.shape
    if len(skeletons) != batch:
        raise ValueError(f"got {len(skeletons)} skeletons for a batch of {batch}; pass one edge list per sample")
    device = keypoint_mask.device

    batch_idx, src, dst = [], [], []
    for b, edges in enumerate(skeletons):
        if len(edges):
            edges_t = torch.as_tensor(edges, dtype=torch.long).reshape(-1, 2)
        else:
            edges_t = torch.zeros(0, 2, dtype=torch.long)
        if edges_t.numel() and (edges_t.min() < 0 or edges_t.max() >= num_kpt):
            raise ValueError(
                f"skeleton of sample {b} has an edge outside [0, {num_kpt}): {edges_t.tolist()}; "
                "edges must be 0-based indices into the keypoint slots"
            )
        batch_idx.append(torch.full((edges_t.shape[0],), b, dtype=torch.long))
        src.append(edges_t[:, 0])
        dst.append(edges_t[:, 1])

    adjacency = torch.zeros(batch, num_kpt, num_kpt, device=device)
    adjacency[torch.cat(batch_idx).to(device), torch.cat(src).to(device), torch.cat(dst).to(device)] = 1.0
    adjacency = torch.maximum(adjacency, adjacency.transpose(1, 2))

    valid = keypoint_mask.to(device=device, dtype=torch.bool).float()
    adjacency = adjacency * valid[:, :, None] * valid[:, None, :]
    adjacency = torch.nan_to_num(adjacency / adjacency.sum(dim=-1, keepdim=True))
    return torch.stack((torch.diag_embed(valid), adjacency), dim=1)
