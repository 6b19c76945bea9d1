"""CapeFormer baseline: GraphCape's model with the decoder's GCN-FFN replaced by a plain FFN.

The architecture difference is one head setting (``head.graph_ffn=False`` in the configs), so the
class only renames GraphCape for error messages and checkpoints; its own class keeps the
registry's `"module:Class"` target inside this folder, where `list_configs` finds the configs.
"""
from __future__ import annotations

from cape_bench.methods.graphcape.model import GraphCape

__all__ = ["CapeFormer"]


class CapeFormer(GraphCape):
    """GraphCape without graph layers; config keys: see `methods/capeformer/configs/capeformer.py`."""

    method_name = "capeformer"
