"""`cape-bench plot`: PNG figures from stored results (matplotlib, Agg backend; nothing is re-run).

* robustness: PCK@0.2 (mean over the splits run) against the noise rate, one
  line per method and noise setting, the clean value at rate 0
  (`robustness-<dataset>-<noise>.png`);
* latency: per-call latency and throughput against batch size from the stored
  profiles (`latency-vs-batch.png`);
* qualitative: for chosen episodes of a run, the support with its keypoints
  and the first queries with ground truth (green) and prediction (red), both
  with the skeleton (`qualitative-<dataset>-<protocol>-<run>-split<k>-ep<e>.png`),
  from the run's stored predictions (`split<k>.<set>.npz`) and the dataset images.
"""
from __future__ import annotations

import re
from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import matplotlib.ticker
import numpy as np

from cape_bench.errors import ConfigError, DatasetError
from cape_bench.results import ResultStore, RunResult, results_root

KINDS = ("robustness", "latency", "qualitative")
HEADLINE = "PCK@0.2"
QUERIES_PER_PANEL = 3


def parse_kinds(value: str) -> list[str]:
    kinds = [k.strip() for k in value.split(",") if k.strip()]
    if kinds == ["all"]:
        return list(KINDS)
    bad = [k for k in kinds if k not in KINDS]
    if not kinds or bad:
        raise ConfigError(f"--kind takes a comma list of {', '.join(KINDS)} or all, got {value!r}")
    return kinds


def parse_episodes(value: str) -> list[int]:
    try:
        episodes = [int(v) for v in str(value).split(",") if v.strip()]
    except ValueError:
        raise ConfigError(f"--episodes must be episode indices, comma separated (e.g. 0,5), got {value!r}") from None
    if not episodes or any(e < 0 for e in episodes):
        raise ConfigError(f"--episodes must be non-negative episode indices, comma separated (e.g. 0,5), got {value!r}")
    return episodes


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9=.+-]+", "_", text).strip("_")


def write_plots(results=None, out: Path | None = None, kinds: str = "all", method: str | None = None, protocol: str = "oneshot",
                split: int = 1, episodes: str = "0", prediction_set: str | None = None, data=None) -> list[Path]:
    """Write the requested figures; returns their paths.

    With `kinds="all"`, a kind without stored inputs is skipped with a note;
    asked for by name, it is an error.
    """
    requested = parse_kinds(kinds)
    explicit = kinds.strip() != "all"
    root = results_root(results)
    out = Path(out or root / "figures")
    out.mkdir(parents=True, exist_ok=True)
    store = ResultStore(root)
    runs = store.all() if store.runs.is_dir() else []
    written: list[Path] = []
    for kind in requested:
        if kind == "robustness":
            paths = robustness_curves(runs, out)
            hint = "run `cape-bench run --protocol robustness --noise ...` first"
        elif kind == "latency":
            from cape_bench.profiling import load_profiles

            paths = latency_vs_batch(load_profiles(root), out)
            hint = "run `cape-bench profile --method M --batch 1,8,32` first"
        else:
            paths = qualitative_panels(store, runs, out, method, protocol, split, parse_episodes(episodes), prediction_set, data, required=explicit)
            hint = f"run `cape-bench run --method M --split {split}` first (predictions are stored next to the result)"
        if not paths:
            if explicit:
                raise ConfigError(f"no stored results for a {kind} figure under {root}: {hint}")
            print(f"no {kind} figure: nothing stored under {root} ({hint})")
        written += paths
    return written


# ------------------------------------------------------------------ robustness
def robustness_curves(runs: list[RunResult], out: Path) -> list[Path]:
    groups: dict[tuple, list[RunResult]] = defaultdict(list)
    for run in runs:
        if run.metrics.get("kind") == "robustness" and run.metrics.get("applicable"):
            groups[(run.dataset, run.metrics["noise"]["noise"], run.protocol, run.run_name)].append(run)
    figures: dict[tuple, list] = defaultdict(list)
    for (dataset, noise, protocol, run_name), members in sorted(groups.items()):
        rates = [0.0] + [p["rate"] for p in members[0].metrics["curve"] if p["rate"] > 0]
        clean = np.mean([r.metrics["clean"]["overall"][HEADLINE] for r in members])
        values = [clean] + [np.mean([r.metrics["curve"][i]["overall"][HEADLINE] for r in members]) for i, p in enumerate(members[0].metrics["curve"]) if p["rate"] > 0]
        setting = protocol.removeprefix(f"robustness-{noise}").strip("-") or "default"
        label = f"{run_name} [{setting}] ({len(members)} split{'s' if len(members) > 1 else ''})"
        figures[(dataset, noise)].append((label, rates, 100 * np.asarray(values)))
    written = []
    for (dataset, noise), lines in figures.items():
        fig, ax = plt.subplots(figsize=(6.4, 4.2))
        for label, rates, values in lines:
            ax.plot(rates, values, marker="o", label=label)
        ax.set_xlabel("noise rate (fraction of pairs)" if noise == "class" else "noise rate (fraction of keypoint strings)" if noise == "keypoint-typo" else "perturbed (1 = every occurrence)")
        ax.set_ylabel(f"{HEADLINE} (%)")
        ax.set_xlim(-0.03, 1.03)
        ax.grid(alpha=0.3)
        ax.set_title(f"Prompt robustness: {noise} noise ({'demo data' if dataset == 'demo' else 'MP-100'})")
        ax.legend(fontsize=7)
        fig.tight_layout()
        path = out / f"robustness-{dataset}-{_slug(noise)}.png"
        fig.savefig(path, dpi=120)
        plt.close(fig)
        written.append(path)
    return written


# --------------------------------------------------------------------- latency
def latency_vs_batch(profiles: list[dict], out: Path) -> list[Path]:
    series = []
    for record in profiles:
        conditions = record["conditions"]
        device = "GPU " + conditions["device_name"] if conditions["device"] == "cuda" else f"CPU ({conditions.get('threads', '?')} threads)"
        by_dtype = defaultdict(list)
        for row in record["latency"]:
            by_dtype[row["dtype"]].append(row)
        for dtype, rows in by_dtype.items():
            rows.sort(key=lambda r: r["batch"])
            label = f"{record['method']}-{record['config_name']} {dtype}, {device}{', compiled' if conditions.get('compile') else ''}"
            series.append((label, [r["batch"] for r in rows], [r["latency_ms"] for r in rows], [r["fps"] or 0 for r in rows]))
    if not series:
        return []
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for label, batches, latency, fps in series:
        left.plot(batches, latency, marker="o", label=label)
        right.plot(batches, fps, marker="o", label=label)
    ticks = sorted({b for _, batches, _, _ in series for b in batches})
    for ax, title, unit in ((left, "latency per call (image + head)", "median ms"), (right, "throughput", "queries / s")):
        ax.set_xscale("log", base=2)
        ax.set_xticks(ticks)
        ax.xaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_yscale("log")
        ax.set_xlabel("batch (queries per call)")
        ax.set_ylabel(unit)
        ax.set_title(title)
        ax.grid(alpha=0.3, which="both")
    left.legend(fontsize=7)
    fig.suptitle("cape-bench profile: pre-loaded tensors, median over timed calls")
    fig.tight_layout()
    path = out / "latency-vs-batch.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return [path]


# ----------------------------------------------------------------- qualitative
def _prediction_file(result_file: Path, wanted: str | None) -> Path | None:
    sets = sorted(result_file.parent.glob(f"{result_file.stem}.*.npz"))
    names = {p.name[len(result_file.stem) + 1 : -len(".npz")]: p for p in sets}
    if wanted is not None:
        if wanted not in names:
            raise ConfigError(f"{result_file}: no prediction set {wanted!r}; stored: {', '.join(names) or 'none'}")
        return names[wanted]
    for preferred in ("predictions",):
        if preferred in names:
            return names[preferred]
    perturbed = sorted((n for n in names if n.startswith("perturbed-r")), key=lambda n: float(n.removeprefix("perturbed-r")))
    if perturbed:
        return names[perturbed[-1]]
    return names.get("clean")


def qualitative_panels(store: ResultStore, runs: list[RunResult], out: Path, method: str | None, protocol: str, split: int, episodes: list[int],
                       prediction_set: str | None, data, required: bool = False) -> list[Path]:
    from cape_bench.engine.evaluate import Predictions

    chosen = [
        r for r in runs
        if r.protocol == protocol and r.split == split and (method is None or method in (r.method, r.run_name)) and r.metrics.get("applicable", True)
    ]
    if required and not chosen:
        raise ConfigError(f"no stored {protocol} run of split {split}{' for ' + method if method else ''}; run `cape-bench run --method M --protocol {protocol} --split {split}` first")
    written = []
    for result in chosen:
        result_file = store.path_for(result.dataset, result.protocol, result.run_name, result.split)
        npz = _prediction_file(result_file, prediction_set)
        if npz is None:
            if required:
                raise ConfigError(f"{result_file}: no stored predictions next to it (the .npz files are not in git); re-run it with --force")
            continue
        predictions = Predictions.load(npz)
        root, annotations = _dataset_for(result, data)
        by_id = {instance.annotation_id: instance for instance in annotations.instances}
        set_name = npz.name[len(result_file.stem) + 1 : -len(".npz")]
        for episode in episodes:
            pairs = np.flatnonzero(predictions.episode_ids == episode)
            if not len(pairs):
                raise ConfigError(f"{npz}: no episode {episode} (episodes 0..{int(predictions.episode_ids.max())})")
            path = out / f"qualitative-{result.dataset}-{_slug(result.protocol)}-{result.run_name}-split{split}-ep{episode}.png"
            _panel(predictions, pairs[:QUERIES_PER_PANEL], by_id, annotations, root, path, f"{result.run_name} | {result.protocol} ({set_name}) | split {split} | episode {episode}")
            written.append(path)
    return written


def _dataset_for(result: RunResult, data):
    from cape_bench.data.layout import DatasetRoot, resolve_dataset
    from cape_bench.data.records import load_annotation_set

    annotation_file = Path(result.annotations["file"])
    if data is not None:
        root = resolve_dataset(data)
        annotation_file = root.annotation_path(result.split, result.settings.get("subset", "test"))
    else:
        root = DatasetRoot(annotation_file.parent.parent, is_demo=result.dataset == "demo")
    if not annotation_file.is_file():
        raise DatasetError(f"{annotation_file}: annotation file of the run not found; pass --data ROOT")
    annotations = load_annotation_set(annotation_file)
    if annotations.sha256 != result.annotations["sha256"]:
        raise DatasetError(f"{annotation_file}: not the annotation file the run used (sha256 differs); pass --data with the run's dataset")
    return root, annotations


def _crop_box(points: np.ndarray, bbox: np.ndarray, shape) -> tuple[int, int, int, int]:
    """The padded box around the object (and any prediction that falls outside it)."""
    x, y, w, h = bbox
    finite = points[np.isfinite(points).all(1)] if len(points) else points
    x0, y0, x1, y1 = x, y, x + w, y + h
    if len(finite):
        x0, y0 = min(x0, finite[:, 0].min()), min(y0, finite[:, 1].min())
        x1, y1 = max(x1, finite[:, 0].max()), max(y1, finite[:, 1].max())
    pad = 0.15 * max(x1 - x0, y1 - y0)
    height, width = shape[:2]
    return int(max(0, x0 - pad)), int(max(0, y0 - pad)), int(min(width, x1 + pad)), int(min(height, y1 + pad))


def _draw(ax, image, keypoints, visible, skeleton, bbox, colour, marker, others=()):
    x0, y0, x1, y1 = _crop_box(np.concatenate([keypoints[visible]] + [o for o in others]) if len(others) else keypoints[visible], bbox, image.shape)
    ax.imshow(image[y0:y1, x0:x1], extent=(x0, x1, y1, y0))
    _plot_pose(ax, keypoints, visible, skeleton, colour, marker)
    ax.set_xlim(x0, x1)
    ax.set_ylim(y1, y0)
    ax.axis("off")


def _plot_pose(ax, keypoints, visible, skeleton, colour, marker, size=28):
    for a, b in skeleton:
        if a < len(visible) and b < len(visible) and visible[a] and visible[b]:
            ax.plot([keypoints[a, 0], keypoints[b, 0]], [keypoints[a, 1], keypoints[b, 1]], color=colour, linewidth=1.2, alpha=0.8)
    ax.scatter(keypoints[visible, 0], keypoints[visible, 1], s=size, c=colour, marker=marker, edgecolors="white", linewidths=0.6, zorder=3)


def _panel(predictions, pairs, by_id, annotations, root, path: Path, title: str) -> None:
    from cape_bench import metrics
    from cape_bench.data.crops import read_rgb

    support = by_id[int(predictions.support_ids[pairs[0]])]
    category = annotations.categories[support.category_id]
    skeleton = category.skeleton
    fig, axes = plt.subplots(1, 1 + len(pairs), figsize=(3.2 * (1 + len(pairs)), 3.6))
    image = read_rgb(root.image_path(support), support)
    _draw(axes[0], image, support.keypoints, support.visible, skeleton, support.bbox, "#1f77b4", "o")
    axes[0].set_title(f"support: {category.name}", fontsize=9)
    for ax, pair in zip(axes[1:], pairs):
        query = by_id[int(predictions.query_ids[pair])]
        k = category.num_keypoints
        mask = predictions.mask[pair, :k]
        predicted = predictions.keypoints[pair, :k]
        score = metrics.pck(predicted[None], query.keypoints[None], mask[None], np.array([query.bbox_size]), thresholds=(0.2,))[0, 0]
        image = read_rgb(root.image_path(query), query)
        _draw(ax, image, query.keypoints, mask, skeleton, query.bbox, "#2ca02c", "o", others=(predicted[mask],))
        _plot_pose(ax, predicted, mask, skeleton, "#d62728", "X", size=34)
        ax.set_title(f"query {query.annotation_id}: PCK@0.2 {100 * score:.0f}%", fontsize=9)
    fig.suptitle(f"{title}\nsupport keypoints (blue); query: ground truth (green o), prediction (red x)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
