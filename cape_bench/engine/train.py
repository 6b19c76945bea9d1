"""Training a method on one split: the upstream recipe on mmengine building blocks.

The recipe is the GraphCape / CapeX / CapeNext one (PROTOCOLS.md section 5):
Adam, lr 1e-5, no weight decay, no gradient clipping; linear warm-up over
1,000 iterations from 1e-3 x lr; step decay x0.1 at epochs 160 and 180 of 200;
batch 16 per process; category-balanced pairs re-drawn every epoch
(`TrainPairDataset`); validation PCK@0.2 on the val split every 25 epochs;
the best-PCK and the last weights are kept. Every number is a key of
`TRAIN_DEFAULTS`, which a method config overrides with a `train = dict(...)`
section and the command line with `--cfg-options train.lr=1e-4`.

The loop is small and explicit, built from mmengine's `OptimWrapper` /
`AmpOptimWrapper` (bf16 autocast on CUDA) and its `LinearLR` / `MultiStepLR`
parameter schedulers rather than its `Runner`: the pair list must be re-drawn
per epoch from (seed, epoch), a budget may end mid-epoch and resume there, and
checkpoints are cape-bench safetensors files, all of which would otherwise be
hooks overriding Runner defaults. Under `torchrun` (WORLD_SIZE > 1) the
process group is initialised (gloo on CPU, nccl on CUDA), every rank trains on
its shard of the epoch's pairs through `DistributedDataParallel`, and rank 0
validates and writes the files.

Files in the work dir: `best.safetensors` / `last.safetensors` (weights, via
`save_checkpoint`, each with a `.json` of metadata: epoch, iteration, val PCK,
config, seed), `last_state.pth` (optimizer, schedulers, counters and RNG state
for `resume=True`) and `history.json`.
"""
from __future__ import annotations

import copy
import json
import math
import os
import random
import time
from collections import Counter
from dataclasses import dataclass, field, fields
from functools import partial
from pathlib import Path
from collections.abc import Callable

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader

from cape_bench.build import build_method, config_hash, parse_overrides
from cape_bench.checkpoints import load_checkpoint, save_checkpoint
from cape_bench.data.episodes import EpisodeSampler
from cape_bench.data.keypoint_texts import KeypointTexts
from cape_bench.data.layout import DatasetRoot, resolve_dataset
from cape_bench.data.train_pairs import EpochShardSampler, TrainPairDataset
from cape_bench.errors import CheckpointError, ConfigError, reject_unknown_settings
from cape_bench.method import MAX_KEYPOINTS, CapeMethod
from cape_bench.registry import METHODS

__all__ = ["TRAIN_DEFAULTS", "TrainResult", "TrainSettings", "train", "train_command", "validate"]

STATE_FILE = "last_state.pth"


@dataclass(frozen=True)
class TrainSettings:
    """The `train` section of a method config, with the upstream values as defaults.

    Attributes:
        epochs: Training epochs (an epoch = every train category x M pairs).
        max_iters: Optional cap on the total number of iterations (a budget).
        batch_size: Pairs per iteration and process.
        optimizer: A `torch.optim` class name.
        lr: Base learning rate.
        weight_decay: Optimizer weight decay.
        warmup_iters: Linear warm-up length in iterations (0: none).
        warmup_ratio: Learning-rate factor at iteration 0 of the warm-up.
        milestones: Epochs after which the learning rate is multiplied by `gamma`.
        gamma: Step-decay factor.
        clip_grad: Max gradient norm (or mmengine's `dict(max_norm=...)`), None for no clipping.
        val_interval: Validate every this many epochs (0: only when the run ends).
        val_episodes: Validation episodes per val category (x 15 queries);
            0 disables validation (no `best` checkpoint).
        val_batch_size: Pairs per decode batch during validation.
        checkpoint_interval: Write `last` every this many epochs (and at the end).
        log_interval: Log (and record in the history) every this many iterations.
        num_workers: DataLoader worker processes.
        amp: bf16 autocast on CUDA (ignored on CPU).
        find_unused_parameters: passed to DistributedDataParallel.
        shots: Supports per training pair.
    """

    epochs: int = 200
    max_iters: int | None = None
    batch_size: int = 16
    optimizer: str = "Adam"
    lr: float = 1e-5
    weight_decay: float = 0.0
    warmup_iters: int = 1000
    warmup_ratio: float = 1e-3
    milestones: tuple[int, ...] = (160, 180)
    gamma: float = 0.1
    clip_grad: float | dict | None = None
    val_interval: int = 25
    val_episodes: int = 10
    val_batch_size: int = 64
    checkpoint_interval: int = 1
    log_interval: int = 50
    num_workers: int = 2
    amp: bool = True
    find_unused_parameters: bool = True
    shots: int = 1

    @classmethod
    def from_config(cls, section: dict | None, **overrides) -> TrainSettings:
        """Settings from a config's `train` section; unknown keys are an error (typos)."""
        values = dict(section or {})
        values.update({k: v for k, v in overrides.items() if v is not None})
        reject_unknown_settings(values, {f.name for f in fields(cls)}, "train")
        if "milestones" in values:
            values["milestones"] = tuple(int(m) for m in values["milestones"] or ())
        settings = cls(**values)
        for name in ("epochs", "batch_size"):
            if int(getattr(settings, name)) < 1:
                raise ConfigError(f"train.{name} must be >= 1, got {getattr(settings, name)}")
        if settings.max_iters is not None and int(settings.max_iters) < 1:
            raise ConfigError(f"train.max_iters must be >= 1 or None, got {settings.max_iters}")
        if not hasattr(torch.optim, str(settings.optimizer)):
            raise ConfigError(f"train.optimizer {settings.optimizer!r} is not a torch.optim class")
        return settings

    def as_dict(self) -> dict:
        return {f.name: (list(v) if isinstance(v := getattr(self, f.name), tuple) else v) for f in fields(self)}


TRAIN_DEFAULTS = TrainSettings().as_dict()
"""The upstream recipe as plain values (what an empty `train` section means)."""


@dataclass
class TrainResult:
    """What a training run leaves behind.

    Attributes:
        best_checkpoint: `best.safetensors` (highest val PCK@0.2), or None when
            the run never validated.
        last_checkpoint: `last.safetensors`.
        history: Log records: {"iteration", "epoch", "lr", "loss", ...} and
            {"iteration", "epoch", "val_pck"}.
        method: The trained method (last weights), still in memory.
    """

    best_checkpoint: Path | None
    last_checkpoint: Path
    history: list[dict] = field(default_factory=list)
    method: CapeMethod | None = None


class _LossModule(nn.Module):
    """`forward` = `method.loss`, so DistributedDataParallel sees (and syncs) the training pass."""

    def __init__(self, method: CapeMethod) -> None:
        super().__init__()
        self.method = method

    def forward(self, batch):
        return self.method.loss(batch)


@dataclass
class _Dist:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    created: bool = False

    @property
    def main(self) -> bool:
        return self.rank == 0


def _init_distributed(device: str) -> _Dist:
    """Join the torchrun process group (env:// rendezvous) when WORLD_SIZE > 1."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if dist.is_available() and dist.is_initialized():
        return _Dist(dist.get_rank(), dist.get_world_size(), local_rank, False)
    if world_size <= 1:
        return _Dist()
    backend = "nccl" if str(device).startswith("cuda") else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(local_rank)
    dist.init_process_group(backend=backend)
    return _Dist(dist.get_rank(), dist.get_world_size(), local_rank, True)


def _rank_device(device: str, ranks: _Dist) -> torch.device:
    device = torch.device(device)
    if device.type == "cuda" and device.index is None and ranks.world_size > 1:
        return torch.device("cuda", ranks.local_rank)
    return device


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (init and dropout); pairs and augmentation take `seed` directly."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _build(method_name: str, config, overrides: dict | None, demo: bool) -> tuple[CapeMethod, dict]:
    """`build_method`, also accepting an already resolved config dict."""
    if not isinstance(config, dict):
        return build_method(method_name, config, overrides, demo=demo)
    from mmengine.config import Config

    canonical = METHODS.canonical(method_name)
    cfg = Config(copy.deepcopy({k: v for k, v in config.items() if k != "method"}))
    if overrides:
        cfg.merge_from_dict(overrides)
    resolved = cfg.to_dict()
    resolved.setdefault("config_name", "custom")
    try:
        method = METHODS.get(canonical)(resolved)
    except TypeError as error:
        raise ConfigError(f"method {canonical!r}, config {resolved['config_name']!r}: {error}") from None
    resolved["method"] = canonical
    return method, resolved


def _total_loss(losses: dict[str, torch.Tensor], method: CapeMethod) -> torch.Tensor:
    """Sum of the entries whose name contains "loss" (mmengine's `parse_losses` convention)."""
    terms = [value.mean() for name, value in losses.items() if "loss" in name]
    if not terms:
        raise ConfigError(f"{type(method).__name__}.loss returned {sorted(losses)}: no entry is named '*loss*', so there is nothing to minimise")
    return sum(terms)


def validate(
    method: CapeMethod,
    root: DatasetRoot,
    split: int,
    *,
    episodes: int = 10,
    batch_size: int = 64,
    device: str | torch.device = "cpu",
    texts: KeypointTexts | None = None,
    subset: str = "val",
) -> float:
    """PCK@0.2 on the val split through the evaluation runner (upstream: 100 episodes x 15 queries).

    Uses the test protocol's episodes (mp100 mode, seed 1) with `episodes`
    per category, so values of one run are comparable across epochs. Leaves
    the method in eval mode.
    """
    from cape_bench import metrics
    from cape_bench.engine.evaluate import Evaluator
    from cape_bench.engine.runner import RunOptions, SplitContext

    annotations = root.load(split, subset)
    texts = texts or KeypointTexts.for_dataset(None, root.keypoint_texts_file)
    sampler = EpisodeSampler(episodes_per_category=episodes, queries_per_episode=15, shots=1, seed=1)
    episode_list = sampler.sample(annotations)
    evaluator = Evaluator(method, root, annotations, episode_list, batch_size=batch_size, device=device)
    context = SplitContext(root, split, annotations, episode_list, evaluator, texts, RunOptions(subset=subset, sampler=sampler))
    predictions = evaluator.run(context.base_prompts())
    values = metrics.pair_metrics(predictions.keypoints, predictions.ground_truth, predictions.mask, predictions.normalizer)
    return float(np.mean(values["PCK@0.2"]))


def _load_state(path: Path) -> dict:
    try:
        with torch.serialization.safe_globals([Counter]):
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - any unreadable state file is the same problem to the user
        raise CheckpointError(f"{path}: training state unreadable ({error}); delete it or train into another --work-dir") from None


def train(
    method_name: str,
    config=None,
    overrides: dict | None = None,
    root: DatasetRoot | str | Path | None = None,
    split: int = 1,
    work_dir: str | Path | None = None,
    seed: int = 1,
    max_epochs: int | None = None,
    max_iters: int | None = None,
    device: str = "cpu",
    resume: bool = False,
    log: Callable[[str], None] | None = print,
    *,
    num_workers: int | None = None,
    keypoint_texts_file: Path | None = None,
) -> TrainResult:
    """Train `method_name` on the train subset of `split`, validating on its val subset.

    Args:
        method_name: A registered method (must be `trainable`).
        config: Config name, config file, an already resolved config dict, or
            None for the default (`tiny` on the demo data).
        overrides: Dotted config overrides ({"train.lr": 1e-4}).
        root: Dataset root; None resolves it as the CLI does (demo data last).
        split: MP-100 split 1..5.
        work_dir: Output folder; default `work_dirs/<method>-<config>/split<k>`.
        seed: Seeds the pair draws, the augmentation and torch (init, dropout).
            The upstream train.py forces seed 1.
        max_epochs: Overrides `train.epochs`.
        max_iters: Overrides `train.max_iters` (a total iteration budget).
        device: "cpu", "cuda" (under torchrun: each rank's LOCAL_RANK GPU) or "cuda:N".
        resume: Continue from `<work_dir>/last_state.pth` (iteration count,
            optimizer, schedulers, best PCK, RNG); starts afresh if absent.
        log: Receives one line per event (rank 0 only); None is silent.
        num_workers: Overrides `train.num_workers`.
        keypoint_texts_file: Description file for text-based methods.

    Returns:
        `TrainResult` with the best and last checkpoints and the history.

    Raises:
        ConfigError: Unknown/invalid settings, a non-trainable method, or a
            resume state from a different config.
        CheckpointError: An unreadable resume state.
    """
    log = log or (lambda line: None)
    ranks = _init_distributed(device)
    try:
        return _train(method_name, config, overrides, root, split, work_dir, seed, max_epochs, max_iters, device, resume, log, num_workers, keypoint_texts_file, ranks)
    finally:
        if ranks.created:
            dist.destroy_process_group()


def _train(method_name, config, overrides, root, split, work_dir, seed, max_epochs, max_iters, device, resume, log, num_workers, keypoint_texts_file, ranks: _Dist) -> TrainResult:
    say = log if ranks.main else (lambda line: None)
    root = root if isinstance(root, DatasetRoot) else resolve_dataset(root)
    seed_everything(seed)
    method, resolved = _build(method_name, config, overrides, demo=root.is_demo)
    if not method.trainable:
        raise ConfigError(f"method {resolved['method']!r} is not trainable (it has no loss); evaluate it directly with `cape-bench run`")
    settings = TrainSettings.from_config(resolved.get("train"), epochs=max_epochs, max_iters=max_iters, num_workers=num_workers)
    run_device = _rank_device(device, ranks)
    work_dir = Path(work_dir) if work_dir is not None else Path("work_dirs") / f"{resolved['method']}-{resolved['config_name']}" / f"split{split}"
    identity = _resume_identity(resolved, seed, split)

    texts = KeypointTexts.for_dataset(keypoint_texts_file, root.keypoint_texts_file)
    dataset = TrainPairDataset(root, split, method.input_size, texts, seed, method.support_kinds, shots=settings.shots)
    pad_to = None if method.pads_keypoints_dynamically else MAX_KEYPOINTS
    per_rank = EpochShardSampler(len(dataset), ranks.rank, ranks.world_size).per_rank
    iters_per_epoch = math.ceil(per_rank / settings.batch_size)
    total_iters = settings.epochs * iters_per_epoch
    if settings.max_iters is not None:
        total_iters = min(total_iters, int(settings.max_iters))

    method.to(run_device).train()
    parameters = [p for p in method.parameters() if p.requires_grad]
    if not parameters:
        raise ConfigError(f"method {resolved['method']!r} ({resolved['config_name']}) has no trainable parameters")
    optim_wrapper = _optim_wrapper(settings, parameters, run_device)
    warmup, decay = _schedulers(settings, optim_wrapper)
    model: nn.Module = _LossModule(method)
    if ranks.world_size > 1:
        model = nn.parallel.DistributedDataParallel(model, find_unused_parameters=settings.find_unused_parameters)

    iteration, epoch, iter_in_epoch, best_pck, history = 0, 0, 0, None, []
    state_path = work_dir / STATE_FILE
    if resume and state_path.is_file():
        state = _load_state(state_path)
        if state["identity"] != identity:
            raise ConfigError(f"{state_path}: was written by a different config, seed or split; train into another --work-dir or drop --resume")
        if state["iter_in_epoch"] and (state["world_size"], state["batch_size"]) != (ranks.world_size, settings.batch_size):
            raise ConfigError(f"{state_path}: stopped mid-epoch with {state['world_size']} process(es) x batch {state['batch_size']}; resume with the same")
        load_checkpoint(method, work_dir / "last.safetensors")
        optim_wrapper.load_state_dict(state["optim"])
        if warmup is not None:
            warmup.load_state_dict(state["warmup"])
        decay.load_state_dict(state["decay"])
        iteration, epoch, iter_in_epoch = state["iteration"], state["epoch"], state["iter_in_epoch"]
        best_pck, history = state["best_pck"], state["history"]
        torch.set_rng_state(state["torch_rng"])
        if state.get("cuda_rng") is not None and run_device.type == "cuda":
            torch.cuda.set_rng_state(state["cuda_rng"], run_device)
        say(f"resumed from {state_path} at iteration {iteration} (epoch {epoch + 1}, {iter_in_epoch}/{iters_per_epoch})")
    elif resume:
        say(f"nothing to resume in {work_dir}: training from scratch")

    if ranks.main:
        work_dir.mkdir(parents=True, exist_ok=True)
    say(
        f"training {resolved['method']} ({resolved['config_name']}) on {root.label} split {split}: {len(dataset)} pairs/epoch, "
        f"{iters_per_epoch} it/epoch x {ranks.world_size} process(es), {total_iters} iterations, batch {settings.batch_size}, "
        f"lr {settings.lr:g}, device {run_device}, work dir {work_dir}"
    )

    def metadata(kind: str, val_pck) -> dict:
        return {
            "kind": kind, "method": resolved["method"], "config_name": resolved["config_name"], "config": resolved,
            "seed": seed, "split": split, "dataset": root.label, "epoch": epoch + (1 if iter_in_epoch else 0),
            "epoch_complete": iter_in_epoch == 0, "iteration": iteration, "val_pck": val_pck,
            "train_settings": settings.as_dict(), "world_size": ranks.world_size,
        }

    def save_last() -> None:
        if not ranks.main:
            return
        save_checkpoint(method, work_dir / "last.safetensors", metadata("last", _latest_val(history)))
        state = {
            "identity": identity, "iteration": iteration, "epoch": epoch, "iter_in_epoch": iter_in_epoch,
            "world_size": ranks.world_size, "batch_size": settings.batch_size, "best_pck": best_pck, "history": history,
            "optim": optim_wrapper.state_dict(), "warmup": None if warmup is None else warmup.state_dict(),
            "decay": decay.state_dict(), "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state(run_device) if run_device.type == "cuda" else None,
        }
        torch.save(state, work_dir / (STATE_FILE + ".tmp"))
        os.replace(work_dir / (STATE_FILE + ".tmp"), state_path)
        (work_dir / "history.json").write_text(json.dumps(history, indent=1))

    last_validated = None
    sums: dict[str, torch.Tensor] = {}
    count, tick = 0, time.perf_counter()
    while iteration < total_iters:
        dataset.set_epoch(epoch)
        sampler = EpochShardSampler(len(dataset), ranks.rank, ranks.world_size, start=iter_in_epoch * settings.batch_size)
        loader = DataLoader(
            dataset, batch_size=settings.batch_size, sampler=sampler, num_workers=settings.num_workers,
            collate_fn=partial(dataset.collate, pad_to=pad_to), pin_memory=run_device.type == "cuda",
            # Its own generator: a loader draws a base seed when iterated, which must not shift the
            # global torch RNG (dropout), or a run resumed mid-epoch would drift from an unbroken one.
            generator=torch.Generator().manual_seed(seed * 100003 + epoch),
        )
        for batch in loader:
            batch = batch.to(run_device)
            lr = optim_wrapper.get_lr()["lr"][0]  # the rate this iteration steps with
            with optim_wrapper.optim_context(model):
                losses = model(batch)
            total = _total_loss(losses, method)
            optim_wrapper.update_params(total)
            if warmup is not None:
                warmup.step()
            iteration += 1
            iter_in_epoch += 1
            for name, value in {"loss": total, **{k: v for k, v in losses.items() if k != "loss"}}.items():
                sums[name] = sums.get(name, 0.0) + value.detach().float().mean()
            count += 1
            if iteration % settings.log_interval == 0 or iteration == total_iters:
                record = {"iteration": iteration, "epoch": epoch + 1, "lr": lr}
                record.update({name: float(value) / count for name, value in sums.items()})
                history.append(record)
                elapsed = time.perf_counter() - tick
                terms = " ".join(f"{k} {v:.4f}" for k, v in record.items() if k not in ("iteration", "epoch", "lr"))
                say(f"epoch {epoch + 1} [{iter_in_epoch}/{iters_per_epoch}] iter {iteration}/{total_iters} lr {record['lr']:.3g} {terms} ({elapsed / count:.2f} s/it)")
                sums, count, tick = {}, 0, time.perf_counter()
            if iteration >= total_iters:
                break
        if iter_in_epoch >= iters_per_epoch:
            epoch, iter_in_epoch = epoch + 1, 0
            decay.step()
        finished = iteration >= total_iters
        epoch_boundary = iter_in_epoch == 0
        wants_validation = finished or (epoch_boundary and settings.val_interval and epoch % settings.val_interval == 0)
        if settings.val_episodes and wants_validation and last_validated != iteration:
            pck = _validate_on_rank0(method, root, split, settings, run_device, texts, ranks)
            method.train()
            last_validated = iteration
            history.append({"iteration": iteration, "epoch": epoch + (1 if iter_in_epoch else 0), "val_pck": pck})
            say(f"validation after iteration {iteration}: PCK@0.2 {100 * pck:.2f} on {root.label} split {split} val")
            if best_pck is None or pck > best_pck:
                best_pck = pck
                if ranks.main:
                    save_checkpoint(method, work_dir / "best.safetensors", metadata("best", pck))
        if finished or (epoch_boundary and epoch % max(1, settings.checkpoint_interval) == 0):
            save_last()
    if not (work_dir / "last.safetensors").is_file():
        save_last()
    if ranks.world_size > 1:
        dist.barrier()
    best = work_dir / "best.safetensors"
    say(f"done: {iteration} iterations; best val PCK@0.2 {'-' if best_pck is None else f'{100 * best_pck:.2f}'}; checkpoints in {work_dir}")
    return TrainResult(best if best.is_file() else None, work_dir / "last.safetensors", history, method)


# Settings that change how long or how verbosely a run goes, not its trajectory:
# a resumed run may change them (e.g. extend the budget).
_RESUMABLE_CHANGES = ("epochs", "max_iters", "num_workers", "log_interval", "val_interval", "checkpoint_interval", "val_batch_size")


def _resume_identity(resolved: dict, seed: int, split: int) -> str:
    config = copy.deepcopy(resolved)
    section = dict(config.get("train") or {})
    for key in _RESUMABLE_CHANGES:
        section.pop(key, None)
    config["train"] = section
    return config_hash({"config": config, "seed": seed, "split": split})


def _latest_val(history: list[dict]):
    for record in reversed(history):
        if "val_pck" in record:
            return record["val_pck"]
    return None


def _validate_on_rank0(method, root, split, settings: TrainSettings, device, texts, ranks: _Dist) -> float:
    value = [None]
    if ranks.main:
        value[0] = validate(method, root, split, episodes=settings.val_episodes, batch_size=settings.val_batch_size, device=device, texts=texts)
    if ranks.world_size > 1:
        dist.broadcast_object_list(value, src=0)
    return float(value[0])


def _optim_wrapper(settings: TrainSettings, parameters, device: torch.device):
    from mmengine.optim import AmpOptimWrapper, OptimWrapper

    optimizer = getattr(torch.optim, settings.optimizer)(parameters, lr=settings.lr, weight_decay=settings.weight_decay)
    clip = settings.clip_grad
    if clip is not None and not isinstance(clip, dict):
        clip = {"max_norm": float(clip)}
    if settings.amp and device.type == "cuda":
        return AmpOptimWrapper(optimizer=optimizer, dtype="bfloat16", clip_grad=clip)
    return OptimWrapper(optimizer, clip_grad=clip)


def _schedulers(settings: TrainSettings, optim_wrapper):
    """Linear warm-up stepped per iteration, step decay stepped per epoch (they compose multiplicatively)."""
    from mmengine.optim import LinearLR, MultiStepLR

    warmup = None
    if settings.warmup_iters > 0:
        warmup = LinearLR(optim_wrapper, start_factor=settings.warmup_ratio, end_factor=1.0, begin=0, end=int(settings.warmup_iters), by_epoch=False)
    decay = MultiStepLR(optim_wrapper, milestones=list(settings.milestones), gamma=settings.gamma, by_epoch=True)
    return warmup, decay


def train_command(
    *, method: str, split, config: str | None = None, cfg_options=None, data=None, work_dir=None, seed: int = 1,
    epochs: int | None = None, max_iters: int | None = None, device: str = "cpu", resume: bool = False,
    workers: int | None = None, keypoint_texts: Path | None = None,
) -> int:
    """`cape-bench train`: train one or more splits in turn; returns the exit code.

    `split` is an int or a list of ints; `work_dir` (default
    `work_dirs/<method>-<config>`) gets a `split<k>` folder per split.
    """
    METHODS.canonical(method)  # fail on a typo before touching any data
    root = resolve_dataset(data)
    if root.is_demo:
        print(f"using the built-in demo dataset at {root.root} (set --data or CAPE_BENCH_DATA for MP-100)")
    splits = [split] if isinstance(split, int) else list(split)
    overrides = parse_overrides(cfg_options)
    ranks = _init_distributed(device)
    try:
        for k in splits:
            folder = None if work_dir is None else Path(work_dir) / f"split{k}"
            result = train(
                method, config, overrides, root, k, folder, seed, max_epochs=epochs, max_iters=max_iters,
                device=device, resume=resume, log=print if ranks.main else None, num_workers=workers, keypoint_texts_file=keypoint_texts,
            )
            if ranks.main:
                chosen = result.best_checkpoint or result.last_checkpoint
                print(f"split {k}: evaluate with `cape-bench run --method {method} --split {k} --checkpoint {chosen}`")
    finally:
        if ranks.created:
            dist.destroy_process_group()
    return 0
