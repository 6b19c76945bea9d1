"""One protocol run on one split: episodes, prompts, evaluation, metrics, result record.

Protocols differ in the prompts they give a method and in how many evaluations
they compare; everything else (data, episodes, caching, provenance, storage)
is here, once.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from cape_bench import metrics
from cape_bench.build import config_hash
from cape_bench.data.episodes import EpisodeSampler, episodes_hash
from cape_bench.data.keypoint_texts import KeypointTexts
from cape_bench.data.layout import DatasetRoot
from cape_bench.engine.evaluate import Evaluator, Predictions, Prompts, QueryCache
from cape_bench.method import CapeMethod
from cape_bench.provenance import provenance
from cape_bench.results import ResultStore, RunResult

HEADLINE = "PCK@0.2"


@dataclass
class RunOptions:
    """Everything about a run that is not the method or the protocol."""

    subset: str = "test"
    sampler: EpisodeSampler = field(default_factory=EpisodeSampler)
    batch_size: int = 64
    device: str = "cpu"
    num_workers: int = 0
    compile: bool = False
    fast: bool = True
    force: bool = False
    keypoint_texts_file: Path | None = None
    text_variant: str = "regular"
    bootstrap_resamples: int = 1000
    progress: bool = True


@dataclass
class SplitContext:
    """What a protocol gets to evaluate a method on one split."""

    root: DatasetRoot
    split: int
    annotations: object
    episodes: list
    evaluator: Evaluator
    texts: KeypointTexts
    options: RunOptions

    def base_prompts(self) -> Prompts:
        categories = self.annotations.categories
        keypoint_texts = {}
        for category_id in {e.category_id for e in self.episodes}:
            keypoint_texts[category_id] = self.texts.texts(categories[category_id], self.options.text_variant)
        class_names = [categories[self.episodes[e].category_id].class_name for e, _ in self.evaluator.pairs]
        return Prompts(keypoint_texts, class_names)

    def score(self, predictions: Predictions) -> tuple[dict, pd.DataFrame]:
        """Overall / per-category / per-supercategory metrics of one evaluation."""
        return score_predictions(predictions, self.annotations, self.options.bootstrap_resamples)


def pair_table(predictions: Predictions, annotations) -> pd.DataFrame:
    values = metrics.pair_metrics(predictions.keypoints, predictions.ground_truth, predictions.mask, predictions.normalizer)
    table = pd.DataFrame(values)
    categories = annotations.categories
    table.insert(0, "episode", predictions.episode_ids)
    table.insert(0, "supercategory", [categories[c].supercategory for c in predictions.category_ids])
    table.insert(0, "category", [categories[c].name for c in predictions.category_ids])
    table.insert(0, "category_id", predictions.category_ids)
    return table


def score_predictions(predictions: Predictions, annotations, bootstrap_resamples: int = 1000) -> tuple[dict, pd.DataFrame]:
    table = pair_table(predictions, annotations)
    overall = metrics.summarize(table).iloc[0].to_dict()
    low, high = metrics.bootstrap_ci(table[HEADLINE].to_numpy(), table["episode"].to_numpy(), n_resamples=bootstrap_resamples)
    per_category = metrics.summarize(table, by="category_id").reset_index()
    per_category.insert(1, "category", [annotations.categories[c].name for c in per_category["category_id"]])
    per_super = metrics.summarize(table, by="supercategory").reset_index()
    # Every episode has the same number of queries, so episode means are enough
    # for the leaderboard's bootstrap over episodes.
    per_episode = table.groupby("episode", sort=True)[HEADLINE].mean().round(6)
    section = {
        "overall": {k: _plain(v) for k, v in overall.items()},
        "ci95": {HEADLINE: [float(low), float(high)], "method": f"percentile bootstrap over episodes, {bootstrap_resamples} resamples"},
        "per_category": _records(per_category),
        "per_supercategory": _records(per_super),
        "per_episode": {HEADLINE: per_episode.tolist()},
    }
    return section, table


def _plain(value):
    return value.item() if isinstance(value, np.generic) else value


def _records(frame: pd.DataFrame) -> list[dict]:
    return [{k: _plain(v) for k, v in row.items()} for row in frame.to_dict(orient="records")]


def file_sha256(path: Path | None) -> str | None:
    if path is None:
        return None
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def run_split(
    protocol,
    method: CapeMethod,
    method_config: dict,
    root: DatasetRoot,
    split: int,
    options: RunOptions,
    store: ResultStore,
    checkpoint: Path | None = None,
    query_cache: QueryCache | None = None,
    progress_factory=None,
) -> tuple[RunResult, bool]:
    """Evaluate (or reuse) one split; returns (result, reused)."""
    annotations = root.load(split, options.subset)
    texts = KeypointTexts.for_dataset(options.keypoint_texts_file, root.keypoint_texts_file)
    settings = {
        "protocol": protocol.settings(),
        "episodes": options.sampler.describe(),
        "subset": options.subset,
        "text_variant": options.text_variant,
        "keypoint_texts_file": file_sha256(options.keypoint_texts_file),
    }
    checkpoint_info = None if checkpoint is None else {"path": str(checkpoint), "sha256": file_sha256(checkpoint)}
    identity = {"settings": settings, "config": method_config, "checkpoint": checkpoint_info, "annotations": annotations.sha256}
    run_hash = config_hash(identity)
    run_name = f"{method_config['method']}-{method_config['config_name']}"
    if not options.force:
        cached = store.find(root.label, protocol.label(), run_name, split, run_hash)
        if cached is not None:
            return cached, True

    episodes = options.sampler.sample(annotations)
    pairs_total = sum(len(e.queries) for e in episodes)
    progress = progress_factory(pairs_total, f"split {split}") if progress_factory else None
    evaluator = Evaluator(
        method, root, annotations, episodes,
        batch_size=options.batch_size, device=options.device, num_workers=options.num_workers,
        progress=progress, query_cache=query_cache, compile=options.compile,
    )
    context = SplitContext(root, split, annotations, episodes, evaluator, texts, options)
    metrics_section, predictions = protocol.evaluate(context)
    if progress is not None:
        progress.close()
    result = RunResult(
        protocol=protocol.label(),
        method=method_config["method"],
        config_name=method_config["config_name"],
        dataset=root.label,
        split=split,
        config_hash=run_hash,
        metrics=metrics_section,
        settings=settings,
        config=method_config,
        episodes={**options.sampler.describe(), "count": len(episodes), "pairs": pairs_total, "sha256": episodes_hash(episodes, annotations)},
        annotations={"file": str(annotations.path), "sha256": annotations.sha256, "instances": len(annotations.instances), "filtered": annotations.filtered.as_dict()},
        checkpoint=checkpoint_info,
        provenance=provenance(options.device),
    )
    store.write(result, predictions)
    return result, False
