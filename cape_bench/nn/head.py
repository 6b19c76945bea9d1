"""The CAPE keypoint head shared by GraphCape, CapeX, CapeNext, CapeFormer and the fusion methods.

`CapeHead` reproduces the upstream ``keypoint_head`` (PoseAnything ``PoseHead``
+ ``EncoderDecoder``, UPSTREAM_ARCH §4-§8): its ``state_dict()`` keys are the
upstream ``keypoint_head.*`` keys without the prefix, so checkpoints load with
``strict=True``. Its inputs are method-agnostic: query features, one embedding
per keypoint slot (pooled support features, text embeddings, fused
embeddings...), the keypoint mask and the skeletons.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from cape_bench.nn.graph_decoder import (
    GraphTransformerDecoder,
    KeypointOffsetMLP,
    inverse_sigmoid,
)
from cape_bench.nn.losses import cape_losses
from cape_bench.nn.positional import SinePositionalEncoding
from cape_bench.nn.proposal import ProposalGenerator
from cape_bench.nn.skeleton import adjacency_from_skeleton
from cape_bench.nn.transformer import TransformerEncoder

__all__ = ["HeadOutput", "CapeEncoderDecoder", "CapeHead"]

SUPPORT_PROJ_NAMES = ("query_proj", "text_proj")


@dataclass
class HeadOutput:
    """What `CapeHead.forward` returns. Coordinates are normalised (x, y) of the input crop.

    Attributes:
        similarity_map: ``[B, K, h, w]`` proposal similarity logits (heatmap loss).
        proposals_for_loss: ``[B, K, 2]`` full-map soft-argmax (proposal loss).
        proposals: ``[B, K, 2]`` local 3x3 soft-argmax, the decoder's first reference.
        layer_outputs: ``[L, B, K, 2]`` per-decoder-layer predictions; ``[-1]`` is the prediction.
        keypoint_mask: ``[B, K]`` bool mask the head was run with (True = valid).
    """

    similarity_map: Tensor
    proposals_for_loss: Tensor
    proposals: Tensor
    layer_outputs: Tensor
    keypoint_mask: Tensor | None = None

    @property
    def keypoints(self) -> Tensor:
        """Final prediction ``[B, K, 2]`` (last decoder layer), as upstream test time."""
        return self.layer_outputs[-1]


class CapeEncoderDecoder(nn.Module):
    """Container named ``transformer`` upstream: ``encoder``, ``proposal_generator``, ``decoder``."""

    def __init__(
        self,
        d_model: int,
        nhead: int,
        num_encoder_layers: int,
        num_decoder_layers: int,
        dim_feedforward: int,
        dropout: float,
        similarity_proj_dim: int,
        dynamic_proj_dim: int,
        graph_ffn: bool,
    ) -> None:
        super().__init__()
        self.d_model = d_model
        self.encoder = TransformerEncoder(d_model, nhead, num_encoder_layers, dim_feedforward, dropout)
        self.decoder = GraphTransformerDecoder(d_model, nhead, num_decoder_layers, dim_feedforward, dropout, graph_ffn)
        self.proposal_generator = ProposalGenerator(d_model, similarity_proj_dim, dynamic_proj_dim)


def xavier_init(root: nn.Module) -> None:
    """Upstream `PoseHead.init_weights`: xavier-uniform on every >1-dim ``.weight`` under `root`, biases 0.

    ``nn.MultiheadAttention`` has no ``.weight`` and keeps its own init.
    """
    for module in root.modules():
        weight = getattr(module, "weight", None)
        if isinstance(weight, Tensor) and weight.dim() > 1:
            nn.init.xavier_uniform_(weight)
            bias = getattr(module, "bias", None)
            if isinstance(bias, Tensor):
                nn.init.zeros_(bias)


class CapeHead(nn.Module):
    """Encoder, proposal generator and graph decoder over query features and keypoint embeddings.

    Args:
        in_channels: Channels of the query feature map.
        support_dim: Width of the per-keypoint support embeddings.
        support_proj_name: State-dict name of the support projection: ``"query_proj"``
            (GraphCape: pooled image features) or ``"text_proj"`` (CapeX/CapeNext).
        d_model: Transformer width (even; the sine encodings use ``d_model // 2`` per axis).
        nhead: Attention heads.
        num_encoder_layers: Encoder layers.
        num_decoder_layers: Decoder layers (= number of ``kpt_branch`` heads and outputs).
        dim_feedforward: FFN width in encoder and decoder.
        dropout: Dropout probability.
        similarity_proj_dim: Width of the proposal similarity space.
        dynamic_proj_dim: Hidden width of the proposal dynamic projection.
        graph_ffn: GCN FFN in the decoder (True) or a plain Linear ``ffn1`` (False).
        heatmap_loss_weight: Multiplier of the heatmap loss in `loss`.

    Raises:
        ValueError: On an unknown ``support_proj_name`` or an odd ``d_model``.
    """

    def __init__(
        self,
        in_channels: int = 768,
        support_dim: int = 768,
        support_proj_name: str = "query_proj",
        d_model: int = 256,
        nhead: int = 8,
        num_encoder_layers: int = 3,
        num_decoder_layers: int = 3,
        dim_feedforward: int = 768,
        dropout: float = 0.1,
        similarity_proj_dim: int = 256,
        dynamic_proj_dim: int = 128,
        graph_ffn: bool = True,
        heatmap_loss_weight: float = 2.0,
    ) -> None:
        super().__init__()
        if support_proj_name not in SUPPORT_PROJ_NAMES:
            raise ValueError(f"support_proj_name={support_proj_name!r}; expected one of {SUPPORT_PROJ_NAMES}")
        if d_model % 2:
            raise ValueError(f"d_model={d_model} must be even: the sine encodings give d_model/2 channels per axis")
        self.d_model = d_model
        self.graph_ffn = graph_ffn
        self.heatmap_loss_weight = heatmap_loss_weight
        self.support_proj_name = support_proj_name
        self.positional_encoding = SinePositionalEncoding(num_feats=d_model // 2)

        # Registration order mirrors the upstream module so state_dict() lists keys in the same order.
        self.transformer = CapeEncoderDecoder(
            d_model,
            nhead,
            num_encoder_layers,
            num_decoder_layers,
            dim_feedforward,
            dropout,
            similarity_proj_dim,
            dynamic_proj_dim,
            graph_ffn,
        )
        self.input_proj = nn.Conv2d(in_channels, d_model, kernel_size=1)
        self.add_module(support_proj_name, nn.Linear(support_dim, d_model))
        self.kpt_branch = nn.ModuleList(
            KeypointOffsetMLP(d_model, d_model) for _ in range(num_decoder_layers)
        )
        self.init_weights()

    @property
    def support_proj(self) -> nn.Linear:
        """The support-embedding projection, whatever its state-dict name."""
        return getattr(self, self.support_proj_name)

    def init_weights(self) -> None:
        """Upstream init: xavier-uniform on every >1-dim ``.weight`` (biases 0), zero last kpt_branch Linear.

        ``nn.MultiheadAttention`` has no ``.weight`` and keeps its own init (its
        ``out_proj`` is a Linear and is re-initialised like the others, as upstream).
        """
        xavier_init(self)
        for branch in self.kpt_branch:
            nn.init.zeros_(branch.mlp[-1].weight)
            nn.init.zeros_(branch.mlp[-1].bias)

    def forward(
        self,
        query_features: Tensor,
        support_embeddings: Tensor,
        keypoint_mask: Tensor,
        skeletons: Sequence[Sequence[Sequence[int]]] | None = None,
    ) -> HeadOutput:
        """Predict the query keypoints.

        Args:
            query_features: ``[B, in_channels, h, w]`` query feature map.
            support_embeddings: ``[B, K, support_dim]``, one embedding per keypoint slot.
            keypoint_mask: ``[B, K]`` bool (or 0/1), True = valid keypoint.
            skeletons: One 0-based edge list per sample; required when ``graph_ffn``.

        Returns:
            `HeadOutput`.

        Raises:
            ValueError: On mismatched batch/keypoint shapes or missing skeletons.
        """
        batch, num_kpt = support_embeddings.shape[:2]
        if query_features.shape[0] != batch or keypoint_mask.shape != (batch, num_kpt):
            raise ValueError(
                f"shape mismatch: query_features {tuple(query_features.shape)}, support_embeddings "
                f"{tuple(support_embeddings.shape)}, keypoint_mask {tuple(keypoint_mask.shape)}; "
                "expected [B,C,h,w], [B,K,D], [B,K]"
            )
        mask = keypoint_mask.to(torch.bool)
        # Invalid slots are zeroed before the projection, so they carry the projection bias.
        keypoint_tokens = self.support_proj(support_embeddings * mask[..., None].to(support_embeddings.dtype))
        return self.decode_tokens(query_features, keypoint_tokens, mask, skeletons)

    def decode_tokens(
        self,
        query_features: Tensor,
        keypoint_tokens: Tensor,
        keypoint_mask: Tensor,
        skeletons: Sequence[Sequence[Sequence[int]]] | None = None,
        transformer: CapeEncoderDecoder | None = None,
    ) -> HeadOutput:
        """`forward` after the support projection: keypoint tokens already ``[B, K, d_model]``.

        For methods that build the keypoint tokens themselves (e.g. fuse two projected
        modalities) or run a second encoder/proposal/decoder stack over the same
        ``input_proj`` and ``kpt_branch`` (``transformer``; default ``self.transformer``).

        Raises:
            ValueError: On mismatched shapes or missing skeletons.
        """
        transformer = self.transformer if transformer is None else transformer
        batch, num_kpt = keypoint_tokens.shape[:2]
        if query_features.shape[0] != batch or keypoint_mask.shape != (batch, num_kpt) \
                or keypoint_tokens.shape[-1] != self.d_model:
            raise ValueError(
                f"shape mismatch: query_features {tuple(query_features.shape)}, keypoint_tokens "
                f"{tuple(keypoint_tokens.shape)}, keypoint_mask {tuple(keypoint_mask.shape)}; "
                f"expected [B,C,h,w], [B,K,{self.d_model}], [B,K]"
            )
        if self.graph_ffn and skeletons is None:
            raise ValueError("this head has a GCN decoder (graph_ffn=True); pass one skeleton edge list per sample")

        image = self.input_proj(query_features)
        _, d_model, height, width = image.shape
        image_tokens = image.flatten(2).transpose(1, 2)  # [B, hw, d]
        image_pos = self.positional_encoding(height, width, image.device).to(image.dtype)
        image_pos = image_pos.flatten(1).transpose(0, 1)[None].expand(batch, -1, -1)

        mask = keypoint_mask.to(torch.bool)
        padding = ~mask

        # Encoder over [image; keypoints]; keypoint tokens get no position (zeros).
        tokens = torch.cat((image_tokens, keypoint_tokens), dim=1)
        pos = torch.cat((image_pos, image_pos.new_zeros(batch, num_kpt, d_model)), dim=1)
        key_padding = torch.cat((padding.new_zeros(batch, height * width), padding), dim=1)
        encoded = transformer.encoder(tokens, pos=pos, key_padding_mask=key_padding)
        memory, keypoint_tokens = encoded[:, : height * width], encoded[:, height * width :]

        proposals_for_loss, similarity_map, proposals = transformer.proposal_generator(
            memory, keypoint_tokens, height, width
        )

        # A sample with no valid keypoint would attend to nothing (NaN): unmask its slot 0, as upstream.
        decoder_padding = padding.clone()
        decoder_padding[:, 0] &= mask.any(dim=1)
        adjacency = (
            adjacency_from_skeleton(skeletons, ~decoder_padding).to(image.dtype) if self.graph_ffn else None
        )
        normed, references = transformer.decoder(
            keypoint_tokens,
            memory,
            image_pos,
            proposals,
            decoder_padding,
            adjacency,
            self.kpt_branch,
            self.positional_encoding.forward_points,
        )
        layer_outputs = torch.stack(
            [
                torch.sigmoid(self.kpt_branch[idx](normed[idx]) + inverse_sigmoid(references[idx]))
                for idx in range(normed.shape[0])
            ]
        )
        return HeadOutput(
            similarity_map=similarity_map,
            proposals_for_loss=proposals_for_loss,
            proposals=proposals,
            layer_outputs=layer_outputs,
            keypoint_mask=mask,
        )

    def loss(
        self,
        output: HeadOutput,
        target_keypoints: Tensor,
        target_weight: Tensor,
        target_heatmaps: Tensor,
    ) -> dict[str, Tensor]:
        """Training losses (UPSTREAM_ARCH §8).

        The weight is ``target_weight`` times ``output.keypoint_mask`` (upstream:
        ``target_weight_q * mask_s``); passing an already combined weight is fine.

        Args:
            output: The forward result.
            target_keypoints: ``[B, K, 2]`` query keypoints, normalised (x, y).
            target_weight: ``[B, K]`` query visibility.
            target_heatmaps: ``[B, K, H, W]`` query target heatmaps (e.g. 64x64 MSRA).

        Returns:
            ``heatmap_loss``, ``proposal_loss`` and ``l1_loss_layer{l}`` for every layer.
        """
        weight = target_weight.to(output.layer_outputs.dtype)
        if output.keypoint_mask is not None:
            weight = weight * output.keypoint_mask.to(weight.dtype)
        return cape_losses(
            output.similarity_map,
            output.proposals_for_loss,
            output.layer_outputs,
            target_keypoints,
            weight,
            target_heatmaps,
            self.heatmap_loss_weight,
        )
