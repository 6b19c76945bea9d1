"""Raster2Seq for CAPE: registered lazily; importing this does not import torch or timm."""
from cape_bench.registry import METHODS

METHODS.register(
    "raster2seq",
    "cape_bench.methods.raster2seq.model:Raster2Seq",
    aliases=("raster2seq-cape",),
    support="keypoints+graph",
    summary="Raster2Seq adapted to CAPE: query keypoints generated as a token sequence by a transformer "
            "decoder conditioned on the query image and an encoded support pose graph",
    default_config="raster2seq",
)
