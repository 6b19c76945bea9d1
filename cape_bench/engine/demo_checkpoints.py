"""Demo checkpoints: a trainable method's tiny config, trained briefly on the demo data, cached.

So that `cape-bench run --method <trainable>` on the built-in demo data
evaluates weights that have seen some training instead of a random init,
without asking anyone to train first. The budget is fixed (`DEMO_BUDGET`) and
short; a demo checkpoint shows that the pipeline works end to end, it is not a
result. Real MP-100 checkpoints come from `cape-bench train`.
"""
from __future__ import annotations

import copy
import json
import os
import shutil
import tempfile
from pathlib import Path
from collections.abc import Callable

from cape_bench.build import config_hash
from cape_bench.data.demo import DEMO_VERSION, default_cache_dir
from cape_bench.data.layout import DatasetRoot
from cape_bench.errors import ConfigError, reject_unknown_settings

__all__ = ["DEMO_BUDGET", "demo_budget", "demo_checkpoint_dir", "ensure_demo_checkpoint"]

DEMO_BUDGET = dict(
    max_iters=1050,
    batch_size=16,
    lr=1e-3,
    warmup_iters=20,
    warmup_ratio=1e-3,
    milestones=[5],
    gamma=0.1,
    val_interval=0,
    val_episodes=2,
    log_interval=175,
    num_workers=0,
)
"""The `train` settings of a demo checkpoint (they replace the config's own).

1,050 iterations x batch 16 = 16,800 pairs (6 demo epochs of 70 categories x
40 pairs), Adam at lr 1e-3 (100x the upstream 1e-5: the tiny configs start
from random weights) with a 20-iteration warm-up and a x0.1 step after
epoch 5, one validation at the end (2 episodes x 15 queries per val
category). A demo checkpoint shows that the pipeline learns end to end on
this data; it is not an MP-100 result, which comes from `cape-bench train`.
Loading runs in the main process (`num_workers=0`): on 2 cores worker
processes only compete with the model, and results do not depend on it.
"""


def demo_budget(method_config: dict) -> dict:
    """`DEMO_BUDGET` with the changes a config asks for in its `demo_budget` section.

    A method whose recipe needs a different demo schedule says so in its tiny
    config, as data, instead of the runner special-casing it.
    """
    changes = dict(method_config.get("demo_budget") or {})
    reject_unknown_settings(changes, DEMO_BUDGET, f"method {method_config.get('method')!r}: demo_budget")
    return {**copy.deepcopy(DEMO_BUDGET), **changes}


_KEPT_FILES = ("best.safetensors", "best.json", "history.json")


def _demo_identity(root: DatasetRoot, split: int) -> dict:
    """Which demo dataset: generator version and seed, and the split's train/val file hashes."""
    identity = {"demo_version": DEMO_VERSION}
    marker = root.root / "DEMO.json"
    if marker.is_file():
        meta = json.loads(marker.read_text())
        identity.update({"demo_version": meta.get("version"), "demo_seed": meta.get("seed")})
    identity["annotations"] = {subset: root.load(split, subset).sha256 for subset in ("train", "val")}
    return identity


def demo_checkpoint_dir(method_name: str, config_name: str, method_config: dict, root: DatasetRoot, split: int, seed: int = 0, budget: dict | None = None) -> Path:
    """`<cache>/demo-checkpoints/<method>-<config>-<hash8>/split<k>` (the hash covers config, seed, budget, data)."""
    budget = demo_budget(method_config) if budget is None else budget
    digest = config_hash({
        "method": method_name, "config": method_config, "seed": seed, "budget": budget, "data": _demo_identity(root, split),
    })
    return default_cache_dir() / "demo-checkpoints" / f"{method_name}-{config_name}-{digest[:8]}" / f"split{split}"


def ensure_demo_checkpoint(
    method_name: str,
    config_name: str,
    method_config: dict,
    root: DatasetRoot | str | Path,
    split: int,
    seed: int = 0,
    log: Callable[[str], None] | None = print,
    *,
    budget: dict | None = None,
    device: str = "cpu",
) -> Path:
    """The cached demo checkpoint of a method config on one demo split, trained on first use.

    Trains `method_config` with its `train` section replaced by `budget`
    (default `DEMO_BUDGET`: 1,050 iterations x batch 16) on the demo train subset, validates once on the
    val subset, and keeps `best.safetensors` (+ `.json` metadata, history)
    under `demo_checkpoint_dir(...)`. A later call with the same config, seed,
    budget and demo data returns the cached file without training. Training
    goes to a temporary sibling folder moved into place when complete, so an
    interrupted run leaves nothing half-written.

    Args:
        method_name: Registered (canonical) method name.
        config_name: Config name, used in the cache folder name.
        method_config: The resolved config (as `build_method` returns it).
        root: The demo dataset root.
        split: Demo split 1..5.
        seed: Training seed.
        log: Progress lines; None is silent.
        budget: `train` settings replacing `demo_budget(method_config)` (tests use a tiny one).
        device: Training device (not part of the cache key).

    Returns:
        Path of `best.safetensors`.

    Raises:
        ConfigError: `root` is not the demo dataset, or the method is not trainable.
    """
    from cape_bench.engine.train import train

    log = log or (lambda line: None)
    if not isinstance(root, DatasetRoot):
        root = DatasetRoot(Path(root), is_demo=(Path(root) / "DEMO.json").is_file())
    if not root.is_demo:
        raise ConfigError(
            f"{root.root}: demo checkpoints are trained on the built-in demo dataset only; "
            f"for MP-100 train with `cape-bench train --method {method_name} --split {split}` and pass --checkpoint"
        )
    budget = demo_budget(method_config) if budget is None else copy.deepcopy(budget)
    folder = demo_checkpoint_dir(method_name, config_name, method_config, root, split, seed, budget)
    best = folder / "best.safetensors"
    if best.is_file() and best.with_suffix(".json").is_file():
        return best

    config = copy.deepcopy(method_config)
    config["train"] = {**dict(config.get("train") or {}), **budget}
    folder.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{folder.name}.tmp-", dir=folder.parent))
    try:
        log(f"training a demo checkpoint of {method_name} ({config_name}) on demo split {split}: "
            f"{budget.get('max_iters')} iterations x batch {budget.get('batch_size')}, cached in {folder}")
        train(method_name, config, None, root, split, scratch, seed, device=device, log=log)
        for path in scratch.iterdir():
            if path.name not in _KEPT_FILES:
                path.unlink() if path.is_file() else shutil.rmtree(path)
        if not (scratch / "best.safetensors").is_file():
            raise ConfigError(f"demo training of {method_name} ({config_name}) wrote no best checkpoint; the budget must validate (it always does at its end)")
        if folder.exists() and not best.is_file():
            shutil.rmtree(folder, ignore_errors=True)  # a broken copy (e.g. files deleted by hand)
        try:
            os.replace(scratch, folder)
        except OSError:
            if not best.is_file():  # not a lost race with a concurrent call: a real failure
                raise
    finally:
        if scratch.exists():
            shutil.rmtree(scratch, ignore_errors=True)
    return best
