"""Multimodal fusion blocks: CapeNext's HCMI + DSFR module and the fusion paper's CMAA.

* `CapeNextFusion` is upstream CapeNext's ``SimpleMultiModalModule``
  (``additional_modules/fuse_feature_module.py``, UPSTREAM_ARCH §3). It refines the
  L2-normalised keypoint ("joint") text embeddings with a CLIP class embedding and a
  CLIP image embedding of the query. Its ``state_dict()`` keys are upstream's
  ``additional_module.*`` keys without the prefix, so official weights load by name.
  The upstream numerics are kept, the AttentionLayer's second residual included;
  the statistics, ``print`` and batch-size-1 code of upstream's ``forward`` are not
  (they crash under autograd, UPSTREAM_ARCH §9.2).
* `CrossModalAlignmentAttention` is the CMAA of Li & Liu, *Enhancing Robust
  Category-Agnostic Pose Estimation through Multi-Modal Feature Alignment*, eq. 1-4:
  one modality's keypoint tokens attend to the other's and take the result through
  a residual scaled by a learnable gamma and a LayerNorm.
* `class_prompt` is the one place a class name becomes CapeNext's prompt text.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

__all__ = ["DEFAULT_CLASS_TEMPLATE", "FUSION_MODES", "class_prompt", "AttentionLayer", "CapeNextFusion",
           "CrossModalAlignmentAttention"]

DEFAULT_CLASS_TEMPLATE = "a photo of {}"
"""Upstream: ``'a photo of ' + query_category_name`` (no article: "a photo of zebra body")."""

FUSION_MODES = ("image_and_class", "image_only")
"""``image_and_class``: the published CapeNext; ``image_only``: CapeNext Table 3 "+img emb"."""


def class_prompt(name: str, template: str = DEFAULT_CLASS_TEMPLATE) -> str:
    """The text CapeNext encodes for a class name.

    The name is the MP-100 category name with ``_`` replaced by a space, as
    ``PairBatch.class_names`` carries it; it is inserted as is (no article, no case change).

    Args:
        name: The class name, e.g. ``"zebra body"``.
        template: A string with exactly one ``{}``.

    Returns:
        ``template`` with the name inserted, e.g. ``"a photo of zebra body"``.

    Raises:
        ValueError: the template does not contain exactly one ``{}``.

    Example:
        >>> class_prompt("zebra body")
        'a photo of zebra body'
    """
    if not isinstance(template, str) or template.count("{}") != 1:
        raise ValueError(f"class prompt template {template!r} must contain exactly one '{{}}' (where the name goes)")
    return template.replace("{}", name)


def _ffn(dim: int, hidden: int, dropout: float) -> nn.Sequential:
    # Indices 0 and 3 hold the weights, as upstream's Sequential(Linear, ReLU, Dropout, Linear).
    return nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden, dim))


class AttentionLayer(nn.Module):
    """Upstream CapeNext ``AttentionLayer``: attention, then an FFN whose residual is the ORIGINAL query.

    ``a = attn(q, k, v)``; ``h = norm1(q + drop(a))``; ``out = norm2(q + drop(ffn(h)))``.
    The second residual adds ``q``, not ``h`` (UPSTREAM_ARCH §3), so the attention result
    reaches the output only through the FFN. Kept because released weights were trained with it.

    Args:
        dim: Token width.
        num_heads: Attention heads.
        ffn_dim: FFN hidden width.
        dropout: Dropout after attention and inside/after the FFN (the attention weights
            themselves are not dropped: upstream builds ``nn.MultiheadAttention(dim, heads)``).
    """

    def __init__(self, dim: int, num_heads: int, ffn_dim: int, dropout: float = 0.1) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(dim, num_heads, batch_first=True)
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.ffn = _ffn(dim, ffn_dim, dropout)
        self.dropout = nn.Dropout(dropout)

    def forward(self, query: Tensor, key: Tensor, value: Tensor) -> Tensor:
        """``[B, Nq, dim]`` queries attending to ``[B, Nk, dim]`` keys/values (no masks, as upstream)."""
        attended = self.attn(query, key, value, need_weights=False)[0]
        hidden = self.norm1(query + self.dropout(attended))
        return self.norm2(query + self.dropout(self.ffn(hidden)))


class CapeNextFusion(nn.Module):
    """CapeNext's fusion module: HCMI over [class; image], then DSFR on the joint embeddings.

    Computation (UPSTREAM_ARCH §3; ``c``, ``i`` are ``[B, 1, D]`` tokens, ``joint`` is ``[B, K, D]``):

    * HCMI: ``X = inter_attention_layer([c; i], [c; i], [c; i])``,
      ``X = norm1(X + drop(inter_ffn(X)))``, split back into ``c'``, ``i'``.
    * DSFR: ``t = text_cross_attention_layer(joint, c', c')``,
      ``m = image_cross_attention_layer(joint, i', i')``; independent gates
      ``w_c = sigmoid(weight_category(t))``, ``w_i = sigmoid(weight_image(m))`` (one scalar
      per joint, not summing to 1); ``f = w_c t + w_i m``; ``f = norm2(f + drop(weighted_ffn(f)))``;
      ``out = norm3(joint + drop(f))``.

    Every joint attends to ONE key per stream, so its attention weight is 1; joints differ
    only through the residual and FFN path, and no joint sees another (padded rows cannot
    change valid ones). The output is not re-normalised.

    Ablations (CapeNext Tables 2-3), each a constructor switch:

    * ``gates=False`` ("w/o LW"): ``w_c = w_i = 1``; the gate layers are not built.
    * ``hcmi=False`` ("w/o HCMI"): the raw class and image embeddings go to DSFR.
    * ``dsfr=False`` ("w/o DSFR"): ``out = joint + category_projection(c') + image_projection(i')``,
      each a ReLU-activated Linear(D, D) (the paper: "two Relu-activated linear layers ... added
      to the joint embedding").
    * ``mode="image_only"`` ("+img emb"): no class embedding; HCMI runs over the image token
      alone and DSFR has only the image stream.

    Args:
        dim: Embedding width (512 for CLIP ViT-B/32).
        num_heads: Attention heads (8).
        ffn_dim: FFN hidden width (2048).
        dropout: Dropout (0.1).
        hcmi: Build and run HCMI.
        dsfr: Build and run DSFR (else the two projections).
        gates: Learnable sigmoid gates in DSFR (else constant 1).
        mode: One of `FUSION_MODES`.
        dead_non_linear: Build upstream's ``non_linear`` FFN, which upstream never calls
            (2.1 M parameters at full size): needed to load official checkpoints strictly and
            to match the published parameter count; it takes no part in ``forward``.
        zero_init_refinement: Start ``norm2``'s gain at 0, so that the module begins as
            ``norm3(joint)`` and training phases the fused streams in (as CMAA's gamma 0).
            With upstream's init (False), ``norm2`` gives the fused term norm ~sqrt(dim) against
            the unit-norm joint embedding, and at random init the refined embeddings of one
            query's keypoints are nearly parallel (cosine ~0.95 for the tiny config). Init
            only: parameters, keys and ``forward`` are unchanged; loaded weights replace it.

    Raises:
        ValueError: unknown mode, ``dim`` not divisible by ``num_heads``, or gates or
            ``zero_init_refinement`` without DSFR.
    """

    def __init__(self, dim: int = 512, num_heads: int = 8, ffn_dim: int = 2048, dropout: float = 0.1, *,
                 hcmi: bool = True, dsfr: bool = True, gates: bool = True, mode: str = "image_and_class",
                 dead_non_linear: bool = True, zero_init_refinement: bool = False) -> None:
        super().__init__()
        if mode not in FUSION_MODES:
            raise ValueError(f"mode={mode!r}; expected one of {', '.join(FUSION_MODES)}")
        if dim % num_heads:
            raise ValueError(f"dim={dim} is not divisible by num_heads={num_heads}")
        if not dsfr and not gates:
            raise ValueError("gates=False only changes DSFR's gates; with dsfr=False there are no gates to fix "
                             "(leave gates=True)")
        if not dsfr and zero_init_refinement:
            raise ValueError("zero_init_refinement starts DSFR's norm2 at 0; with dsfr=False there is no norm2")
        self.dim, self.mode, self.hcmi, self.dsfr, self.gates = int(dim), mode, bool(hcmi), bool(dsfr), bool(gates)
        self.uses_class = mode == "image_and_class"
        # Registration order = upstream's, so state_dict() lists keys as the released checkpoints do.
        if hcmi:
            self.inter_attention_layer = AttentionLayer(dim, num_heads, ffn_dim, dropout)
        if dsfr:
            if self.uses_class:
                self.text_cross_attention_layer = AttentionLayer(dim, num_heads, ffn_dim, dropout)
            self.image_cross_attention_layer = AttentionLayer(dim, num_heads, ffn_dim, dropout)
        if dead_non_linear:
            self.non_linear = _ffn(dim, ffn_dim, dropout)
        if hcmi:
            self.norm1 = nn.LayerNorm(dim)
        if dsfr:
            self.norm2 = nn.LayerNorm(dim)
            self.norm3 = nn.LayerNorm(dim)
            if zero_init_refinement:
                nn.init.zeros_(self.norm2.weight)
            if gates:
                if self.uses_class:
                    self.weight_category = nn.Linear(dim, 1)
                self.weight_image = nn.Linear(dim, 1)
        if hcmi:
            self.inter_ffn = _ffn(dim, ffn_dim, dropout)
        if dsfr:
            self.weighted_ffn = _ffn(dim, ffn_dim, dropout)
        else:
            if self.uses_class:
                self.category_projection = nn.Sequential(nn.Linear(dim, dim), nn.ReLU())
            self.image_projection = nn.Sequential(nn.Linear(dim, dim), nn.ReLU())
        self.dropout = nn.Dropout(dropout)

    def interact(self, image: Tensor, category: Tensor | None) -> tuple[Tensor, Tensor | None]:
        """HCMI: ``(image', class')`` as ``[B, 1, D]`` tokens (the inputs themselves when ``hcmi=False``)."""
        tokens = image[:, None] if category is None else torch.stack((category, image), dim=1)
        if self.hcmi:
            tokens = self.inter_attention_layer(tokens, tokens, tokens)
            tokens = self.norm1(tokens + self.dropout(self.inter_ffn(tokens)))
        if category is None:
            return tokens, None
        return tokens[:, 1:2], tokens[:, 0:1]

    def forward(self, joint: Tensor, image: Tensor, category: Tensor | None = None) -> Tensor:
        """Refine the joint embeddings.

        Args:
            joint: ``[B, K, D]`` L2-normalised keypoint text embeddings (zero rows for padded
                or masked slots, which are computed too, as upstream).
            image: ``[B, D]`` L2-normalised CLIP image embedding of the query.
            category: ``[B, D]`` L2-normalised CLIP embedding of the class prompt (required
                unless ``mode="image_only"``, where it is ignored).

        Returns:
            ``[B, K, D]``, not re-normalised.

        Raises:
            ValueError: shapes do not fit, or the class embedding is missing.
        """
        batch, _, dim = joint.shape
        if image.shape != (batch, dim):
            raise ValueError(f"image embedding {list(image.shape)} does not fit joint embeddings {list(joint.shape)}; "
                             f"expected [{batch}, {dim}]")
        if not self.uses_class:
            category = None
        elif category is None or category.shape != (batch, dim):
            got = "none" if category is None else list(category.shape)
            raise ValueError(f"class embedding {got} does not fit joint embeddings {list(joint.shape)}; "
                             f"expected [{batch}, {dim}]")
        image = image.to(joint.dtype)
        category = None if category is None else category.to(joint.dtype)
        image_token, class_token = self.interact(image, category)

        if not self.dsfr:
            refined = joint + self.image_projection(image_token)
            if class_token is not None:
                refined = refined + self.category_projection(class_token)
            return refined

        image_stream = self.image_cross_attention_layer(joint, image_token, image_token)
        fused = self._gate(self.weight_image if self.gates else None, image_stream)
        if class_token is not None:
            class_stream = self.text_cross_attention_layer(joint, class_token, class_token)
            fused = fused + self._gate(self.weight_category if self.gates else None, class_stream)
        fused = self.norm2(fused + self.dropout(self.weighted_ffn(fused)))
        return self.norm3(joint + self.dropout(fused))

    @staticmethod
    def _gate(layer: nn.Linear | None, stream: Tensor) -> Tensor:
        # Without learnable weights ("w/o LW") the weight is the constant 1.
        return stream if layer is None else torch.sigmoid(layer(stream)) * stream


class CrossModalAlignmentAttention(nn.Module):
    """CMAA (fusion paper eq. 1-4): ``LayerNorm(x + gamma * softmax(Q K^T / sqrt(d)) V)``.

    ``Q = x W_Q`` from the stream that keeps the residual ("dominant" modality), ``K = y W_K``
    and ``V = y W_V`` from the other one; one head, ``d_k = dim``. The three projections are
    bias-free ``dim x dim`` matrices and the LayerNorm has no affine parameters, so the module
    holds ``3 dim^2 + 1`` parameters: exactly what the paper's Table 5 adds to CapeX-S
    (195.519 M -> 195.715 M at dim 256).

    Args:
        dim: Token width.
        gamma_init: Initial gamma. 0 makes the module start as ``LayerNorm(x)``: the fused
            information is phased in by training (the paper's "plug-and-play" use).
    """

    def __init__(self, dim: int, gamma_init: float = 0.0) -> None:
        super().__init__()
        self.dim = int(dim)
        self.query_proj = nn.Linear(dim, dim, bias=False)
        self.key_proj = nn.Linear(dim, dim, bias=False)
        self.value_proj = nn.Linear(dim, dim, bias=False)
        self.gamma = nn.Parameter(torch.tensor(float(gamma_init)))
        self.norm = nn.LayerNorm(dim, elementwise_affine=False)

    def forward(self, tokens: Tensor, context: Tensor, context_mask: Tensor | None = None) -> Tensor:
        """Fuse ``context`` into ``tokens``.

        Args:
            tokens: ``[B, N, dim]``, the residual stream (queries).
            context: ``[B, M, dim]``, attended to (keys and values).
            context_mask: ``[B, M]`` bool, True = a valid key. Padded or invisible keypoints
                must not be attended to (else the 100-slot and K-slot paths would differ);
                a sample with no valid key gets no fused term.

        Returns:
            ``[B, N, dim]``.
        """
        query, key, value = self.query_proj(tokens), self.key_proj(context), self.value_proj(context)
        scores = query @ key.transpose(1, 2) / math.sqrt(self.dim)
        if context_mask is not None:
            valid = context_mask.to(torch.bool)
            scores = scores.masked_fill(~valid[:, None, :], torch.finfo(scores.dtype).min)
        weights = scores.softmax(dim=-1)
        if context_mask is not None:
            weights = weights * valid.any(dim=-1)[:, None, None].to(weights.dtype)
        return self.norm(tokens + self.gamma * (weights @ value))
