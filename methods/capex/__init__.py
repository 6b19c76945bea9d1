"""CapeX: registered lazily; importing this does not import torch, timm or a text encoder."""
from cape_bench.registry import METHODS

METHODS.register(
    "capex",
    "cape_bench.methods.capex.model:CapeX",
    aliases=("cape-x",),
    support="text",
    summary="CapeX (ICLR 2025): keypoint text embeddings (frozen gte/CLIP) instead of support images + graph decoder",
    default_config="capex",
)
