"""`cape-bench run`: build the method once, evaluate it split by split, print one table."""
from __future__ import annotations

from pathlib import Path

from tabulate import tabulate

from cape_bench.build import build_method, parse_overrides
from cape_bench.data.episodes import EpisodeSampler
from cape_bench.data.layout import resolve_dataset
from cape_bench.engine.evaluate import QueryCache
from cape_bench.engine.runner import HEADLINE, RunOptions, run_split
from cape_bench.registry import METHODS, PROTOCOLS
from cape_bench.results import ResultStore, results_root


def _progress_factory(enabled: bool):
    if not enabled:
        return None
    from tqdm import tqdm

    return lambda total, label: tqdm(total=total, desc=label, unit="pair", leave=False, mininterval=0.5, disable=None)


def run_command(
    *, method: str, config: str | None, cfg_options, protocol: str, splits: list[int], subset: str, data,
    checkpoint: Path | None, seed: int, episode_mode: str, num_episodes: int, queries: int, shots: int,
    keypoint_texts: Path | None, text_variant: str, batch_size: int, device: str, workers: int, naive: bool,
    force: bool, results, progress: bool, protocol_options: dict | None = None,
) -> int:
    protocol_object = PROTOCOLS.get(protocol)(shots=shots, **(protocol_options or {}))
    METHODS.canonical(method)  # fail on a typo before touching any data
    root = resolve_dataset(data)
    if root.is_demo:
        print(f"using the built-in demo dataset at {root.root} (set --data or CAPE_BENCH_DATA for MP-100)")
    built, resolved = build_method(method, config, parse_overrides(cfg_options), demo=root.is_demo)
    if checkpoint is not None:
        from cape_bench.checkpoints import load_checkpoint

        load_checkpoint(built, checkpoint)
    options = RunOptions(
        subset=subset,
        sampler=EpisodeSampler(episodes_per_category=num_episodes, queries_per_episode=queries, shots=shots, seed=seed, mode=episode_mode),
        batch_size=batch_size, device=device, num_workers=workers, fast=not naive, force=force,
        keypoint_texts_file=keypoint_texts, text_variant=text_variant, progress=progress,
    )
    store = ResultStore(results_root(results))
    query_cache = QueryCache()
    rows = []
    for split in splits:
        result, reused = run_split(
            protocol_object, built, resolved, root, split, options, store,
            checkpoint=checkpoint, query_cache=query_cache, progress_factory=_progress_factory(progress),
        )
        overall = result.metrics["overall"]
        low, high = result.metrics["ci95"][HEADLINE]
        rows.append([split, 100 * overall[HEADLINE], f"[{100 * low:.2f}, {100 * high:.2f}]", 100 * overall["mPCK"], result.episodes["pairs"], "reused" if reused else "new"])
    if len(rows) > 1:
        rows.append(["mean", sum(r[1] for r in rows) / len(rows), "", sum(r[3] for r in rows) / len(rows), sum(r[4] for r in rows), ""])
    title = f"{resolved['method']} ({resolved['config_name']}) | {protocol_object.label()} | {root.label} {subset} | seed {seed}"
    print(title)
    print(tabulate(rows, headers=["split", f"{HEADLINE} (%)", "95% CI", "mPCK (%)", "pairs", "result"], floatfmt=".2f", tablefmt="github"))
    print(f"results in {store.runs / root.label / protocol_object.label()}")
    return 0
