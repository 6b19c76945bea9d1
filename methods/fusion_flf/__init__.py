"""Method-FLF (feature-level fusion): registered lazily; importing this does not import torch or timm."""
from cape_bench.registry import METHODS

METHODS.register(
    "fusion-flf",
    "cape_bench.methods.fusion_flf.model:FusionFLF",
    aliases=("flf", "method-flf"),
    support="image+text",
    summary="Li & Liu Method-FLF: support-image keypoint features and keypoint text embeddings fused by "
            "Cross-Modal Alignment Attention (CMAA) + graph decoder",
    default_config="fusion_flf",
)
