"""Greedy autoregressive decoding of a pose sequence, with or without the KV cache.

The number of keypoints is known from the support, so the grammar is forced: ``<coord>``,
``<sep>`` and ``<eos>`` sit at fixed positions and only x and y are generated. Each generated value
is the regression head's (continuous, sub-bin) and is fed back through the bilinear coordinate
embedding. Known tokens are fed together: ``[y_(i-1), <sep>, <coord>_i]`` in one decoder call that
yields x_i, then ``[x_i]`` yields y_i, so a pose of L keypoints takes 2L calls. With the cache each
call runs only its new positions; without it each call re-runs the whole prefix (the same numbers,
for timing the cache).
"""
from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from cape_bench.methods.raster2seq.decoder import LayerMemory, SequenceDecoder
from cape_bench.methods.raster2seq.embedding import TokenEmbedding
from cape_bench.methods.raster2seq.sequence import TOKENS_PER_KEYPOINT

__all__ = ["greedy_decode"]


@torch.no_grad()
def greedy_decode(decoder: SequenceDecoder, embedding: TokenEmbedding, regress: Callable[[Tensor], Tensor],
                  memories: list[LayerMemory], keypoints: Tensor, use_cache: bool = True) -> Tensor:
    """Generate the sequence of every item; returns ``[B, L, 2]`` keypoints in sequence order.

    Args:
        decoder: The decoder.
        embedding: Input embeddings of sequence positions.
        regress: Hidden state ``[B, d]`` -> normalised ``[B, 2]``.
        memories: `SequenceDecoder.prepare` output.
        keypoints: ``[B, L, d]`` sequence-ordered support-graph embeddings (L >= 1).
        use_cache: Keep the self-attention keys/values of fed positions instead of re-running them.
    """
    batch, length = keypoints.shape[:2]
    coords = keypoints.new_zeros(batch, length, 2, dtype=torch.float32)  # fed back: kept in fp32
    cache, fed = None, 0
    for index in range(length):
        for axis in (0, 1):
            stop = TOKENS_PER_KEYPOINT * index + 2 + axis  # input position after <coord>_i (axis 0) or x_i (1)
            start = fed if use_cache else 0
            outputs, cache = decoder(embedding(start, stop, coords, keypoints), memories, cache if use_cache else None)
            coords[:, index, axis] = regress(outputs[-1][:, -1])[:, axis]
            fed = stop
    return coords
