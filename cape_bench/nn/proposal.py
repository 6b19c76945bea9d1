"""Similarity-map proposal generator (UPSTREAM_ARCH §5, `transformer.proposal_generator`).

Each keypoint token is matched against every image token through a dynamic
projection; the resulting similarity map gives two soft-argmax locations:

* ``proposals_for_loss``: soft-argmax over the whole map (only the L1
  proposal loss sees it);
* ``proposals``: soft-argmax restricted to the 3x3 neighbourhood of the argmax
  cell, which seeds the decoder's reference points.

Coordinates are cell centres ((c + 0.5) / w, (r + 0.5) / h), normalised to [0, 1].
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["ProposalGenerator", "cell_centre_grid"]


def cell_centre_grid(height: int, width: int, device: torch.device | None = None) -> Tensor:
    """(x, y) cell-centre coordinates in cells, ``[height*width, 2]``, row-major."""
    ys = torch.linspace(0.5, height - 0.5, height, dtype=torch.float32, device=device)
    xs = torch.linspace(0.5, width - 0.5, width, dtype=torch.float32, device=device)
    grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack((grid_x, grid_y), dim=-1).reshape(height * width, 2)


class ProposalGenerator(nn.Module):
    """Dynamic-projection similarity and soft-argmax proposals.

    Args:
        d_model: Width of the encoder tokens.
        proj_dim: Width of the similarity space (``similarity_proj_dim``).
        dynamic_proj_dim: Hidden width of the dynamic projection MLP.
    """

    def __init__(self, d_model: int = 256, proj_dim: int = 256, dynamic_proj_dim: int = 128) -> None:
        super().__init__()
        self.support_proj = nn.Linear(d_model, proj_dim)
        self.query_proj = nn.Linear(d_model, proj_dim)
        # Upstream builds this as Linear(d_model, ...) -> Linear(..., d_model) but applies it to
        # proj_dim features, which only works when proj_dim == d_model; using proj_dim keeps
        # the same shapes at full size (256 == 256) and works for any proj_dim.
        self.dynamic_proj = nn.Sequential(
            nn.Linear(proj_dim, dynamic_proj_dim),
            nn.ReLU(),
            nn.Linear(dynamic_proj_dim, proj_dim),
        )

    def forward(
        self, image_tokens: Tensor, keypoint_tokens: Tensor, height: int, width: int
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Compute the similarity map and both proposals.

        Args:
            image_tokens: ``[B, height*width, d]`` encoder memory, row-major.
            keypoint_tokens: ``[B, K, d]`` refined keypoint tokens.
            height: Feature-map rows.
            width: Feature-map columns.

        Returns:
            ``(proposals_for_loss [B,K,2], similarity_map [B,K,height,width], proposals [B,K,2])``,
            coordinates as normalised (x, y).
        """
        batch, num_kpt = keypoint_tokens.shape[:2]
        support = self.support_proj(keypoint_tokens)
        query = self.query_proj(image_tokens)
        support = (torch.tanh(self.dynamic_proj(support)) + 1) * support
        similarity = torch.bmm(support, query.transpose(1, 2))  # [B, K, hw]

        grid = cell_centre_grid(height, width, similarity.device).to(similarity.dtype)
        side = torch.tensor([width, height], dtype=similarity.dtype, device=similarity.device)
        prob = similarity.softmax(dim=-1)
        proposals_for_loss = (prob[..., None] * grid).sum(dim=2) / side

        # 3x3 neighbourhood of the argmax cell (upstream: one-hot dilated by a 3x3 max-pool).
        peak = similarity.argmax(dim=-1)
        peak_row = torch.div(peak, width, rounding_mode="floor")
        peak_col = peak - peak_row * width
        rows = torch.arange(height, device=similarity.device)
        cols = torch.arange(width, device=similarity.device)
        near_row = (rows - peak_row[..., None]).abs() <= 1  # [B, K, h]
        near_col = (cols - peak_col[..., None]).abs() <= 1  # [B, K, w]
        local = (near_row[..., :, None] & near_col[..., None, :]).reshape(batch, num_kpt, height * width)
        local_prob = prob * local.to(prob.dtype)
        local_prob = local_prob / (local_prob.sum(dim=-1, keepdim=True) + 1e-10)
        proposals = (local_prob[..., None] * grid).sum(dim=2) / side

        return proposals_for_loss, similarity.reshape(batch, num_kpt, height, width), proposals
