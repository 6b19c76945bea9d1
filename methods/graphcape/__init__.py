"""GraphCape (Pose Anything): registered lazily; importing this does not import torch or timm."""
from cape_bench.registry import METHODS

METHODS.register(
    "graphcape",
    "cape_bench.methods.graphcape.model:GraphCape",
    aliases=("pose-anything", "poseanything"),
    support="image",
    summary="Pose Anything (CVPR 2024): SwinV2 features pooled at the support keypoints + graph transformer decoder",
    default_config="graphcape_s",
)
