"""Naive vs fast 1-shot evaluation of one demo split, per method, in the same run.

    python benchmarks/eval_paths.py [--methods capex,graphcape] [--config tiny] [--episodes 200] [--device cpu]

`--config capex` (any full-size config) builds it with random weights
(`random_init=True`): timings do not depend on the weights.

The naive path evaluates every pair alone at batch size 1 with 100 padded
keypoint slots (as the upstream test loop); the fast path encodes each
distinct query/support once and decodes many pairs per batch. Prints model
time for both, the ratio, and the largest difference between their outputs.
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from cape_bench.build import build_method, list_configs
from cape_bench.data.demo import ensure_demo_dataset
from cape_bench.data.episodes import EpisodeSampler
from cape_bench.data.keypoint_texts import KeypointTexts
from cape_bench.data.layout import DatasetRoot
from cape_bench.engine.evaluate import Evaluator, Prompts
from cape_bench.provenance import device_description, git_revision
from cape_bench.registry import METHODS


def time_paths(name: str, config: str | None, root: DatasetRoot, split: int, episodes_per_category: int, device: str, batch_size: int) -> dict:
    annotations = root.load(split, "test")
    episodes = EpisodeSampler(episodes_per_category=episodes_per_category).sample(annotations)
    configs = list_configs(name)
    config = config or ("tiny" if "tiny" in configs else configs[0])
    overrides = None if config in ("tiny", "default") else {"random_init": True}
    method, _ = build_method(name, config, overrides, demo=True)
    texts = KeypointTexts.for_dataset(None, root.keypoint_texts_file)
    evaluator = Evaluator(method, root, annotations, episodes, batch_size=batch_size, device=device)
    prompts = Prompts(
        {c: texts.texts(annotations.categories[c]) for c in annotations.categories},
        [annotations.categories[episodes[e].category_id].class_name for e, _ in evaluator.pairs],
    )
    timings, outputs = {}, {}
    for label, fast in (("fast", True), ("naive", False)):
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        start = time.perf_counter()
        outputs[label] = evaluator.run(prompts, fast=fast)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        timings[label] = time.perf_counter() - start
    difference = np.nanmax(np.abs(outputs["fast"].keypoints - outputs["naive"].keypoints))
    return {"method": f"{name}/{config}", "pairs": len(evaluator.pairs), **timings, "ratio": timings["naive"] / timings["fast"], "max_diff_px": float(difference)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--methods", default=",".join(METHODS.names()))
    parser.add_argument("--config", help="one config for every method (default: tiny, else the first)")
    parser.add_argument("--split", type=int, default=1)
    parser.add_argument("--episodes", type=int, default=200, help="episodes per category (200 = the whole split)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch-size", type=int, default=256)
    args = parser.parse_args()
    root = DatasetRoot(ensure_demo_dataset(), is_demo=True)
    print(f"device {device_description(args.device)}, torch {torch.__version__}, git {git_revision()}, demo split {args.split}, {args.episodes} episodes/category")
    print(f"{'method/config':<18} {'pairs':>7} {'naive s':>9} {'fast s':>8} {'ratio':>7} {'max |diff| px':>14}")
    for name in args.methods.split(","):
        row = time_paths(name, args.config, root, args.split, args.episodes, args.device, args.batch_size)
        print(f"{row['method']:<18} {row['pairs']:>7} {row['naive']:>9.2f} {row['fast']:>8.2f} {row['ratio']:>7.1f} {row['max_diff_px']:>14.2e}")


if __name__ == "__main__":
    main()
