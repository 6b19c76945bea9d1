"""The efficiency protocol: what `cape-bench profile` measures, as a protocol entry.

Efficiency needs no dataset and no episodes, so it does not run through
`cape-bench run`; the measurement is `cape_bench.profiling` (see its module
docstring for the exact definition) and results go to
`<results>/profiles/<method>-<config>/<device>.json`, one file per method,
config and device (re-profiling overwrites it), rendered by `cape-bench
leaderboard` as the efficiency table next to the fusion paper's Table 5.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from cape_bench.errors import ConfigError


@dataclass
class EfficiencyProtocol:
    """Suite defaults (PROTOCOLS.md 4.3): batch 1, fp32, 10 warm-up + 100 timed calls."""

    name = "efficiency"
    needs_data = False  # `cape-bench run` refuses it before touching any data
    shots: int = 1
    batches: list[int] = field(default_factory=lambda: [1])
    dtypes: list[str] = field(default_factory=lambda: ["fp32"])
    iters: int = 100
    warmup: int = 10

    def label(self) -> str:
        return self.name

    def settings(self) -> dict:
        return {"name": self.name, "batches": self.batches, "dtypes": self.dtypes, "iters": self.iters, "warmup": self.warmup}

    def evaluate(self, context):
        raise ConfigError("the efficiency protocol needs no data: run `cape-bench profile --method M [--device cuda] [--batch 1,8,32]`")
