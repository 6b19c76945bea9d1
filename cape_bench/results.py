"""One result record per (dataset, protocol, method+config, split), with provenance.

Layout: `<results>/runs/<dataset>/<protocol label>/<method>-<config>/split<k>.json`
plus `split<k>.npz` with the raw per-pair predictions, so metrics can be
recomputed without running the model again. A result whose `config_hash`
matches the requested run is reused unless `--force`.
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from cape_bench.errors import ConfigError

RESULTS_ENV = "CAPE_BENCH_RESULTS"
SCHEMA_VERSION = 1


def results_root(explicit: str | Path | None = None) -> Path:
    """`--results`, then `$CAPE_BENCH_RESULTS`, then `./results`."""
    return Path(explicit or os.environ.get(RESULTS_ENV) or "results")


@dataclass
class RunResult:
    protocol: str
    method: str
    config_name: str
    dataset: str
    split: int
    config_hash: str
    metrics: dict
    settings: dict
    config: dict
    episodes: dict
    annotations: dict
    checkpoint: dict | None
    provenance: dict
    schema: int = SCHEMA_VERSION
    extra: dict = field(default_factory=dict)

    @property
    def run_name(self) -> str:
        return f"{self.method}-{self.config_name}"

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1, sort_keys=False, default=str)

    @classmethod
    def from_file(cls, path: Path) -> "RunResult":
        try:
            data = json.loads(Path(path).read_text())
            return cls(**data)
        except (json.JSONDecodeError, TypeError) as error:
            raise ConfigError(f"{path}: not a cape-bench result file ({error})") from None


@dataclass
class ResultStore:
    root: Path

    @property
    def runs(self) -> Path:
        return self.root / "runs"

    def path_for(self, dataset: str, protocol: str, run_name: str, split: int) -> Path:
        return self.runs / dataset / protocol / run_name / f"split{split}.json"

    def find(self, dataset: str, protocol: str, run_name: str, split: int, config_hash: str) -> RunResult | None:
        path = self.path_for(dataset, protocol, run_name, split)
        if not path.is_file():
            return None
        result = RunResult.from_file(path)
        return result if result.config_hash == config_hash else None

    def write(self, result: RunResult, predictions=None) -> Path:
        """Write the JSON (and the predictions next to it) atomically."""
        path = self.path_for(result.dataset, result.protocol, result.run_name, result.split)
        path.parent.mkdir(parents=True, exist_ok=True)
        if predictions is not None:
            for name, prediction in predictions.items():
                target = path.with_name(f"{path.stem}.{name}.npz")
                prediction.save(target.with_suffix(".tmp.npz"))
                os.replace(target.with_suffix(".tmp.npz"), target)
        temporary = path.with_suffix(".json.tmp")
        temporary.write_text(result.to_json())
        os.replace(temporary, path)
        return path

    def all(self) -> list[RunResult]:
        return [RunResult.from_file(path) for path in sorted(self.runs.glob("*/*/*/split*.json"))]
