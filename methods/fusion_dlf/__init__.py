"""Method-DLF (decision-level fusion): registered lazily; importing this does not import torch or timm."""
from cape_bench.registry import METHODS

METHODS.register(
    "fusion-dlf",
    "cape_bench.methods.fusion_dlf.model:FusionDLF",
    aliases=("dlf", "method-dlf"),
    support="image+text",
    summary="Li & Liu Method-DLF: an image-support and a text-support path over one backbone, combined at "
            "the decision level and aligned by a consistency loss",
    default_config="fusion_dlf",
)
