"""CapeFormer baseline (Pose Anything "base"): registered lazily; importing this does not import torch or timm."""
from cape_bench.registry import METHODS

METHODS.register(
    "capeformer",
    "cape_bench.methods.capeformer.model:CapeFormer",
    aliases=("pose-anything-base",),
    support="image",
    summary="CapeFormer baseline as Pose Anything re-ran it: GraphCape with a plain FFN instead of the GCN-FFN",
    default_config="capeformer",
)
