"""Evaluation protocols. Each registers here by name; the module is imported on first use."""
from cape_bench.registry import PROTOCOLS

PROTOCOLS.register(
    "oneshot",
    "cape_bench.protocols.oneshot:OneShotProtocol",
    aliases=("1shot", "one-shot", "kshot"),
    summary="MP-100 1-shot (k-shot with --shots) test: 200 episodes x 15 queries per unseen category, PCK@0.05..0.25",
)
PROTOCOLS.register(
    "robustness",
    "cape_bench.protocols.robustness:RobustnessProtocol",
    aliases=("noise", "prompt-robustness"),
    summary="clean vs perturbed prompts on the same episodes: --noise class|keypoint-typo|keypoint-substitution|synonym|keypoint-variant",
)
PROTOCOLS.register(
    "efficiency",
    "cape_bench.protocols.efficiency:EfficiencyProtocol",
    aliases=("profile",),
    summary="params, FLOPs per stage, latency/FPS, peak memory on pre-loaded tensors: `cape-bench profile --method M`",
)
