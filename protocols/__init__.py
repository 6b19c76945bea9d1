"""Evaluation protocols. Each registers here by name; the module is imported on first use."""
from cape_bench.registry import PROTOCOLS

PROTOCOLS.register(
    "oneshot",
    "cape_bench.protocols.oneshot:OneShotProtocol",
    aliases=("1shot", "one-shot", "kshot"),
    summary="MP-100 1-shot (k-shot with --shots) test: 200 episodes x 15 queries per unseen category, PCK@0.05..0.25",
)
