"""The MP-100 1-shot (k-shot) protocol: every pair once, clean prompts, PCK at five thresholds."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass
class OneShotProtocol:
    name = "oneshot"
    shots: int = 1

    def label(self) -> str:
        return self.name if self.shots == 1 else f"{self.shots}shot"

    def settings(self) -> dict:
        return {"name": self.name, "shots": self.shots}

    def evaluate(self, context):
        """Returns (metrics section, {name: predictions}) for the result store."""
        predictions = context.evaluator.run(context.base_prompts(), fast=context.options.fast)
        section, _ = context.score(predictions)
        return section, {"predictions": predictions}
