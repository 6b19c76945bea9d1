"""CapeNext: registered lazily; importing this does not import torch, timm or open_clip."""
from cape_bench.registry import METHODS

METHODS.register(
    "capenext",
    "cape_bench.methods.capenext.model:CapeNext",
    aliases=("cape-next",),
    support="text+class",
    summary="CapeNext (AAAI 2026): CapeX's CLIP keypoint texts refined with a class prompt and the query's "
            "CLIP image embedding (HCMI + DSFR)",
    default_config="capenext",
)
