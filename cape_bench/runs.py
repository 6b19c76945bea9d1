"""`cape-bench run`: build the method once, evaluate it split by split, print one table."""
from __future__ import annotations

from pathlib import Path

import torch
from tabulate import tabulate

from cape_bench.build import build_method, parse_overrides
from cape_bench.data.episodes import EpisodeSampler
from cape_bench.data.layout import resolve_dataset
from cape_bench.engine.evaluate import QueryCache
from cape_bench.engine.runner import HEADLINE, RunOptions, run_split
from cape_bench.errors import ConfigError
from cape_bench.profiling import resolve_device
from cape_bench.registry import METHODS, PROTOCOLS
from cape_bench.results import ResultStore, results_root


def _progress_factory(enabled: bool):
    if not enabled:
        return None
    from tqdm import tqdm

    return lambda total, label: tqdm(total=total, desc=label, unit="pair", leave=False, mininterval=0.5, disable=None)


def run_command(
    *, method: str | None, config: str | None, cfg_options, protocol: str, splits: list[int], subset: str, data,
    checkpoint: Path | None, seed: int, episode_mode: str, num_episodes: int, queries: int, shots: int,
    keypoint_texts: Path | None, text_variant: str, batch_size: int, device: str, workers: int, naive: bool, compile: bool,
    force: bool, results, progress: bool, protocol_options: dict | None = None, per_category: bool = False,
    train_demo: bool = True,
) -> int:
    protocol_object = make_protocol(protocol, shots, protocol_options)
    overrides = parse_overrides(cfg_options)
    if checkpoint is not None:
        from cape_bench.upstream import plan_checkpoint

        # The file names its method and size; --method/--config, if given, must agree with it.
        plan = plan_checkpoint(checkpoint, method, config, overrides)
        method, config, overrides = plan.method, plan.config, plan.overrides
        print(f"checkpoint {checkpoint}: {plan.detection.label} -> --method {method} --config {config}")
    elif method is None:
        raise ConfigError("--method is required (or --checkpoint, whose file names the method)")
    METHODS.canonical(method)  # fail on a typo before touching any data
    resolve_device(device)
    root = resolve_dataset(data)
    if root.is_demo:
        print(f"using the built-in demo dataset at {root.root} (set --data or CAPE_BENCH_DATA for MP-100)")
    built, resolved = build_method(method, config, overrides, demo=root.is_demo)
    if checkpoint is not None:
        from cape_bench.checkpoints import load_checkpoint

        report = load_checkpoint(built, checkpoint)
        if report is not None:
            print(report.render())
    demo_training = checkpoint is None and root.is_demo and built.trainable and train_demo
    if checkpoint is None and built.trainable and not demo_training:
        print(f"note: {resolved['method']} ({resolved['config_name']}) runs with its initial weights (no --checkpoint given)")
    options = RunOptions(
        subset=subset,
        sampler=EpisodeSampler(episodes_per_category=num_episodes, queries_per_episode=queries, shots=shots, seed=seed, mode=episode_mode),
        batch_size=batch_size, device=device, num_workers=workers, compile=compile, fast=not naive, force=force,
        keypoint_texts_file=keypoint_texts, text_variant=text_variant, progress=progress,
    )
    store = ResultStore(results_root(results))
    query_cache = QueryCache()
    rows, split_results = [], []
    title = f"{resolved['method']} ({resolved['config_name']}) | {protocol_object.label()} | {root.label} {subset} | seed {seed}"
    if torch.device(device).type == "cpu":
        title += " | CPU"
    for split in splits:
        split_checkpoint = checkpoint
        if demo_training:
            split_checkpoint = _demo_weights(built, resolved, root, split, device)
            query_cache = QueryCache()  # new weights: encodings of the previous split's model are stale
        result, reused = run_split(
            protocol_object, built, resolved, root, split, options, store,
            checkpoint=split_checkpoint, query_cache=query_cache, progress_factory=_progress_factory(progress),
        )
        split_results.append(result)
        if "overall" not in result.metrics:
            continue
        overall = result.metrics["overall"]
        low, high = result.metrics["ci95"][HEADLINE]
        rows.append([split, 100 * overall[HEADLINE], f"[{100 * low:.2f}, {100 * high:.2f}]", 100 * overall["mPCK"], result.episodes["pairs"], "reused" if reused else "new"])
    if hasattr(protocol_object, "render"):
        # Protocols with their own result layout (robustness) print their own table.
        print(protocol_object.render(split_results, title))
        if per_category and hasattr(protocol_object, "render_per_category"):
            print(protocol_object.render_per_category(split_results))
    else:
        if len(rows) > 1:
            rows.append(["mean", sum(r[1] for r in rows) / len(rows), "", sum(r[3] for r in rows) / len(rows), sum(r[4] for r in rows), ""])
        print(title)
        print(tabulate(rows, headers=["split", f"{HEADLINE} (%)", "95% CI", "mPCK (%)", "pairs", "result"], floatfmt=".2f", tablefmt="github"))
    print(f"results in {store.runs / root.label / protocol_object.label()}")
    return 0


def make_protocol(name: str, shots: int, options: dict | None = None):
    """The protocol object, with a one-line error for an option it does not take."""
    protocol_class = PROTOCOLS.get(name)
    options = dict(options or {})
    if not getattr(protocol_class, "needs_data", True):
        # Efficiency (and any protocol like it) measures a model, not a dataset.
        protocol_class(shots=shots).evaluate(None)
    known = set(getattr(protocol_class, "__dataclass_fields__", {}))
    unknown = [key for key in options if known and key not in known]
    if unknown:
        flags = ", ".join("--" + key.replace("_", "-") for key in unknown)
        verb = "does" if len(unknown) == 1 else "do"
        raise ConfigError(f"{flags} {verb} not apply to --protocol {PROTOCOLS.canonical(name)}; use --protocol robustness")
    return protocol_class(shots=shots, **options)


def _demo_weights(built, resolved: dict, root, split: int, device: str) -> Path:
    """Train (once, cached) the fixed demo budget for this split and load it into `built`."""
    from cape_bench.checkpoints import load_checkpoint
    from cape_bench.engine.demo_checkpoints import ensure_demo_checkpoint

    path = ensure_demo_checkpoint(resolved["method"], resolved["config_name"], resolved, root, split, device=device)
    load_checkpoint(built, path)
    return path
