"""Graph transformer decoder with iterative reference refinement (UPSTREAM_ARCH §5).

Submodule names match the upstream state_dict: ``layers.{i}.{self_attn,
multihead_attn, choker, ffn1, ffn2, norm1, norm2, norm3}``, ``norm`` and
``ref_point_head.layers.{0,1}``. The per-layer offset heads (``kpt_branch``)
belong to the head, as upstream, and are passed in.

Reference-point bookkeeping (upstream behaviour, kept exactly):

* layer l's query position is ``ref_point_head(sine(ref_l))``; for l = 0 the
  encoding is taken from the *non-detached* proposals, so the decoder sends
  gradient into the proposal generator through the position path only;
* ``ref_{l+1} = sigmoid(inverse_sigmoid(ref_l) + kpt_branch[l](f_l))`` uses the
  UN-normed features; the detached copy drives the next layer, while the
  non-detached one is what the head's reported output l+1 is built on;
* the features returned per layer are ``norm(f_l)``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "inverse_sigmoid",
    "GCNLayer",
    "PointEmbeddingMLP",
    "KeypointOffsetMLP",
    "GraphDecoderLayer",
    "GraphTransformerDecoder",
]


def inverse_sigmoid(x: Tensor, eps: float = 1e-3) -> Tensor:
    """``log(x / (1 - x))`` with x clamped to [0, 1] and both x and 1-x to at least ``eps``."""
    x = x.clamp(min=0, max=1)
    return torch.log(x.clamp(min=eps) / (1 - x).clamp(min=eps))


class GCNLayer(nn.Module):
    """Graph convolution with one 1x1 conv per adjacency kernel, then ReLU.

    ``out[b, w, c] = relu(sum_k sum_v conv(x)[b, k, c, v] * A[b, k, v, w])``.

    Args:
        in_features: Input width.
        out_features: Output width.
        kernel_size: Number of adjacency kernels (2: self loop, neighbours).
        bias: Whether the conv has a bias.
    """

    def __init__(self, in_features: int, out_features: int, kernel_size: int = 2, bias: bool = True) -> None:
        super().__init__()
        self.kernel_size = kernel_size
        self.conv = nn.Conv1d(in_features, out_features * kernel_size, kernel_size=1, bias=bias)

    def forward(self, x: Tensor, adjacency: Tensor) -> Tensor:
        """Apply the layer.

        Args:
            x: ``[B, K, in_features]``.
            adjacency: ``[B, kernel_size, K, K]`` from `adjacency_from_skeleton`.

        Returns:
            ``[B, K, out_features]``.

        Raises:
            ValueError: If the adjacency has the wrong number of kernels.
        """
        if adjacency.shape[1] != self.kernel_size:
            raise ValueError(f"adjacency has {adjacency.shape[1]} kernels, GCNLayer expects {self.kernel_size}")
        batch, num_kpt, _ = x.shape
        y = self.conv(x.transpose(1, 2)).view(batch, self.kernel_size, -1, num_kpt)
        y = torch.einsum("bkcv,bkvw->bwc", y, adjacency.to(y.dtype))
        return F.relu(y)


class PointEmbeddingMLP(nn.Module):
    """Linear layers with GELU between them (upstream ``MLP``, used as ``ref_point_head``).

    Args:
        input_dim: Input width.
        hidden_dim: Hidden width.
        output_dim: Output width.
        num_layers: Number of Linear layers.
    """

    def __init__(self, input_dim: int, hidden_dim: int, output_dim: int, num_layers: int = 2) -> None:
        super().__init__()
        dims_in = [input_dim] + [hidden_dim] * (num_layers - 1)
        dims_out = [hidden_dim] * (num_layers - 1) + [output_dim]
        self.layers = nn.ModuleList(nn.Linear(i, o) for i, o in zip(dims_in, dims_out))

    def forward(self, x: Tensor) -> Tensor:
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < len(self.layers) - 1:
                x = F.gelu(x)
        return x


class KeypointOffsetMLP(nn.Module):
    """``kpt_branch``: (Linear + GELU) x num_hidden, then Linear to 2 (upstream ``TokenDecodeMLP``).

    Args:
        in_channels: Token width.
        hidden_channels: Hidden width.
        out_channels: Output width (2: an (x, y) offset in logit space).
        num_hidden: Number of Linear + GELU pairs (indices 0, 2, 4; output at 6).
    """

    def __init__(self, in_channels: int, hidden_channels: int, out_channels: int = 2, num_hidden: int = 3) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = in_channels
        for _ in range(num_hidden):
            layers += [nn.Linear(width, hidden_channels), nn.GELU()]
            width = hidden_channels
        layers.append(nn.Linear(width, out_channels))
        self.mlp = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.mlp(x)


class GraphDecoderLayer(nn.Module):
    """Self-attention, concatenated-position cross-attention, GCN (or plain) FFN; post-norm.

    Args:
        d_model: Token width d.
        nhead: Attention heads.
        dim_feedforward: FFN hidden width.
        dropout: Dropout probability.
        graph_ffn: True: ``ffn1`` is a `GCNLayer` over the skeleton (GraphCape/CapeX);
            False: a plain Linear (the CapeFormer-style 'base' decoder).
    """

    def __init__(
        self, d_model: int, nhead: int, dim_feedforward: int, dropout: float = 0.1, graph_ffn: bool = True
    ) -> None:
        super().__init__()
        self.graph_ffn = graph_ffn
        self.self_attn = nn.MultiheadAttention(d_model, nhead, dropout=dropout, batch_first=True)
        # q = cat(f, qpos), k = cat(memory, img_pos) are 2d wide, v = memory is d wide, so the
        # state_dict has separate q/k/v projection weights.
        self.multihead_attn = nn.MultiheadAttention(
            2 * d_model, nhead, dropout=dropout, vdim=d_model, batch_first=True
        )
        self.choker = nn.Linear(2 * d_model, d_model)
        self.ffn1: nn.Module = (
            GCNLayer(d_model, dim_feedforward) if graph_ffn else nn.Linear(d_model, dim_feedforward)
        )
        self.ffn2 = nn.Linear(dim_feedforward, d_model)
        self.dropout = nn.Dropout(dropout)
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.norm3 = nn.LayerNorm(d_model)
        self.dropout1 = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(dropout)
        self.dropout3 = nn.Dropout(dropout)

    def forward(
        self,
        keypoints: Tensor,
        memory: Tensor,
        memory_pos: Tensor,
        query_pos: Tensor,
        key_padding_mask: Tensor | None = None,
        adjacency: Tensor | None = None,
    ) -> Tensor:
        """Refine the keypoint tokens once.

        Args:
            keypoints: ``[B, K, d]``.
            memory: ``[B, hw, d]`` encoded image tokens.
            memory_pos: ``[B, hw, d]`` image position encoding.
            query_pos: ``[B, K, d]`` keypoint position embedding.
            key_padding_mask: ``[B, K]`` bool, True = padded keypoint (ignored as a key).
            adjacency: ``[B, 2, K, K]``; required when ``graph_ffn``.

        Returns:
            ``[B, K, d]``.
        """
        q = keypoints + query_pos
        attended = self.self_attn(q, q, keypoints, key_padding_mask=key_padding_mask, need_weights=False)[0]
        keypoints = self.norm1(keypoints + self.dropout1(attended))

        cross_q = torch.cat((keypoints, query_pos), dim=-1)
        cross_k = torch.cat((memory, memory_pos), dim=-1)
        attended = self.multihead_attn(cross_q, cross_k, memory, need_weights=False)[0]
        keypoints = self.norm2(keypoints + self.dropout2(self.choker(attended)))

        if self.graph_ffn:
            if adjacency is None:
                raise ValueError("graph_ffn=True needs the skeleton adjacency; pass adjacency=[B, 2, K, K]")
            hidden = self.ffn1(keypoints, adjacency)
        else:
            hidden = self.ffn1(keypoints)
        # GCNLayer already applied ReLU; the second ReLU is upstream's and is a no-op there.
        hidden = self.ffn2(self.dropout(F.relu(hidden)))
        return self.norm3(keypoints + self.dropout3(hidden))


class GraphTransformerDecoder(nn.Module):
    """Stack of `GraphDecoderLayer` with shared final norm and ``ref_point_head``.

    Args:
        d_model: Token width.
        nhead: Attention heads.
        num_layers: Decoder layers.
        dim_feedforward: FFN hidden width.
        dropout: Dropout probability.
        graph_ffn: See `GraphDecoderLayer`.
    """

    def __init__(
        self,
        d_model: int,
        nhead: int,
        num_layers: int,
        dim_feedforward: int,
        dropout: float = 0.1,
        graph_ffn: bool = True,
    ) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            GraphDecoderLayer(d_model, nhead, dim_feedforward, dropout, graph_ffn) for _ in range(num_layers)
        )
        self.norm = nn.LayerNorm(d_model)
        self.ref_point_head = PointEmbeddingMLP(d_model, d_model, d_model, num_layers=2)

    def forward(
        self,
        keypoints: Tensor,
        memory: Tensor,
        memory_pos: Tensor,
        initial_proposals: Tensor,
        key_padding_mask: Tensor,
        adjacency: Tensor | None,
        kpt_branch: nn.ModuleList,
        point_encoding: Callable[[Tensor], Tensor],
    ) -> tuple[Tensor, list[Tensor]]:
        """Run all layers.

        Args:
            keypoints: ``[B, K, d]`` refined keypoint tokens from the encoder.
            memory: ``[B, hw, d]`` image memory.
            memory_pos: ``[B, hw, d]`` image position encoding.
            initial_proposals: ``[B, K, 2]`` normalised proposals (not detached).
            key_padding_mask: ``[B, K]`` bool, True = padded; must leave at least one
                key per sample unmasked.
            adjacency: ``[B, 2, K, K]`` or None when the FFN is not a GCN.
            kpt_branch: One offset MLP per layer.
            point_encoding: Maps ``[B, K, 2]`` points to ``[B, K, d]`` sine encodings.

        Returns:
            ``(normed [L, B, K, d], references)``, where ``references`` has L+1 entries:
            ``references[0]`` is the detached proposals and ``references[l+1]`` the
            (non-detached) reference after layer l.
        """
        reference = initial_proposals.detach()
        references = [reference]
        normed = []
        for idx, layer in enumerate(self.layers):
            source = initial_proposals if idx == 0 else reference
            query_pos = self.ref_point_head(point_encoding(source).to(keypoints.dtype))
            keypoints = layer(keypoints, memory, memory_pos, query_pos, key_padding_mask, adjacency)
            normed.append(self.norm(keypoints))
            updated = torch.sigmoid(inverse_sigmoid(reference) + kpt_branch[idx](keypoints))
            references.append(updated)
            reference = updated.detach()
        return torch.stack(normed), references
