"""Leaderboard tables from stored runs, with the papers' numbers as marked reference rows.

Our rows carry a 95% confidence interval of the split mean from a bootstrap
over episodes, stratified by split (episodes resampled within each split),
from the per-episode PCK stored in each result. Published rows come from the
seed papers (`results/published.csv`, shipped as `cape_bench/data/published.csv`;
every number checked against the seed documents) and never mix into our means.

Besides the main table: a robustness table (clean / perturbed / drop per
robustness run and noise rate, next to CapeNext Tables 4-5) and an efficiency
table (from `<results>/profiles/`, next to the fusion paper's Table 5).
"""
from __future__ import annotations

import csv
import os
from collections import defaultdict
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd

from cape_bench.results import ResultStore, RunResult, results_root

HEADLINE = "PCK@0.2"
SPLIT_COLUMNS = [f"split{k}" for k in range(1, 6)]
README_START, README_END = "<!-- leaderboard:start -->", "<!-- leaderboard:end -->"


def stratified_ci(per_split_episode_means: list[np.ndarray], n_resamples: int = 1000, seed: int = 0) -> tuple[float, float]:
    """95% CI of the mean over splits, resampling episodes within each split (equal-size episodes)."""
    rng = np.random.default_rng(seed)
    draws = np.zeros(n_resamples)
    for means in per_split_episode_means:
        picks = rng.integers(0, len(means), size=(n_resamples, len(means)))
        draws += means[picks].mean(1)
    draws /= len(per_split_episode_means)
    return float(np.percentile(draws, 2.5)), float(np.percentile(draws, 97.5))


def is_plain(result: RunResult) -> bool:
    """A run with one evaluation (oneshot, k-shot); robustness runs carry a `kind` and their own table."""
    return "kind" not in result.metrics and "overall" in result.metrics


def main_table(results: list[RunResult]) -> pd.DataFrame:
    """One row per (dataset, protocol, method-config): PCK@0.2 per split, mean, CI, mPCK."""
    groups: dict[tuple, list[RunResult]] = defaultdict(list)
    for result in filter(is_plain, results):
        groups[(result.dataset, result.protocol, result.method, result.config_name)].append(result)
    rows = []
    for (dataset, protocol, method, config), members in sorted(groups.items()):
        by_split = {r.split: r for r in members}
        row = {"dataset": dataset, "protocol": protocol, "method": method, "config": config, "source": "cape-bench run"}
        for split in range(1, 6):
            result = by_split.get(split)
            row[f"split{split}"] = None if result is None else round(100 * result.metrics["overall"][HEADLINE], 2)
        done = [by_split[s] for s in sorted(by_split)]
        row["mean"] = round(float(np.mean([100 * r.metrics["overall"][HEADLINE] for r in done])), 2)
        row["mPCK"] = round(float(np.mean([100 * r.metrics["overall"]["mPCK"] for r in done])), 2)
        low, high = stratified_ci([np.asarray(r.metrics["per_episode"][HEADLINE]) for r in done])
        row["95% CI"] = f"[{100 * low:.2f}, {100 * high:.2f}]"
        row["splits"] = len(done)
        rows.append(row)
    return pd.DataFrame(rows)


def published_csv(results_folder: Path) -> Path:
    """`<results>/published.csv` when the user keeps one, else the copy shipped with cape-bench."""
    local = results_folder / "published.csv"
    return local if local.is_file() else Path(str(resources.files("cape_bench.data").joinpath("published.csv")))


def published_rows(path: Path) -> pd.DataFrame:
    """PCK@0.2 rows of the seed papers that give per-split values."""
    rows = []
    with open(path, newline="") as handle:
        for record in csv.DictReader(handle):
            if record["metric"] != HEADLINE or not record["split1"] or record["setting"].startswith("noisy"):
                continue
            backbone = "/".join(b for b in (record["img_backbone"], record["text_backbone"]) if b and b != "-")
            rows.append(
                {
                    "dataset": "mp100",
                    "protocol": "oneshot" if "5-shot" not in record["setting"] else "5shot",
                    "method": f"{record['method']} (published)",
                    "config": backbone,
                    "source": f"{record['source']} {record['table']}",
                    **{f"split{k}": float(record[f"split{k}"]) for k in range(1, 6)},
                    "mean": float(record["avg"]) if record["avg"] else None,
                }
            )
    return pd.DataFrame(rows)


def supercategory_table(results: list[RunResult]) -> pd.DataFrame:
    """PCK@0.2 per paper supercategory, pair-weighted over the splits run."""
    totals: dict[tuple, dict[str, list[float]]] = defaultdict(lambda: defaultdict(lambda: [0.0, 0.0]))
    for result in filter(is_plain, results):
        key = (result.dataset, result.protocol, result.method, result.config_name)
        for row in result.metrics.get("per_supercategory", []):
            cell = totals[key][row["supercategory"]]
            cell[0] += row[HEADLINE] * row["pairs"]
            cell[1] += row["pairs"]
    rows = []
    for (dataset, protocol, method, config), cells in sorted(totals.items()):
        row = {"dataset": dataset, "protocol": protocol, "method": method, "config": config}
        row.update({name: round(100 * s / n, 2) for name, (s, n) in sorted(cells.items())})
        rows.append(row)
    return pd.DataFrame(rows)


# ------------------------------------------------------------------ robustness
# Clean reference of each published robustness row (same paper, clean prompts):
# Table 4's "w/o LW" model is the Table 2 ablation, the others are Table 1.
PUBLISHED_CLEAN = {
    "CapeNext w/o LW (retrained without gating)": ("Table 2", "CapeNext w/o LW"),
    "CapeNext w/ LW": ("Table 2", "CapeNext"),
    "CapeX": ("Table 1", "CapeX"),
    "CapeNext": ("Table 1", "CapeNext"),
}
ROBUSTNESS_COLUMNS = ["dataset", "noise", "rate", "method", "config", "source", *SPLIT_COLUMNS, "clean", "perturbed", "drop", "drop 95% CI", "clean mPCK", "perturbed mPCK", "changed", "splits"]


def _noise_name(result: RunResult) -> str:
    return result.metrics.get("description") or result.protocol.removeprefix("robustness-")


def robustness_table(results: list[RunResult]) -> pd.DataFrame:
    """Per robustness run (and noise rate): perturbed PCK@0.2 per split, clean / perturbed means, drop (points)."""
    groups: dict[tuple, list[RunResult]] = defaultdict(list)
    for result in results:
        if result.metrics.get("kind") == "robustness":
            groups[(result.dataset, result.protocol, result.method, result.config_name)].append(result)
    rows = []
    for (dataset, protocol, method, config), members in sorted(groups.items()):
        members = sorted(members, key=lambda r: r.split)
        base = {"dataset": dataset, "noise": protocol.removeprefix("robustness-"), "method": method, "config": config, "source": "cape-bench run"}
        if not all(r.metrics.get("applicable") for r in members):
            reason = next(r.metrics.get("reason", "not applicable") for r in members if not r.metrics.get("applicable"))
            rows.append({**base, "rate": None, "clean": None, "perturbed": None, "drop": None, "changed": reason, "splits": len(members)})
            continue
        base["noise"] = _noise_name(members[0])
        for index, point in enumerate(members[0].metrics["curve"]):
            points = [r.metrics["curve"][index] for r in members]
            row = {**base, "rate": point["rate"]}
            for result, p in zip(members, points):
                row[f"split{result.split}"] = round(100 * p["overall"][HEADLINE], 2)
            clean = float(np.mean([100 * r.metrics["clean"]["overall"][HEADLINE] for r in members]))
            perturbed = float(np.mean([100 * p["overall"][HEADLINE] for p in points]))
            # Paired: the same episodes in both evaluations, so the CI is over per-episode differences.
            low, high = stratified_ci([
                np.asarray(r.metrics["clean"]["per_episode"][HEADLINE]) - np.asarray(p["per_episode"][HEADLINE]) for r, p in zip(members, points)
            ])
            row.update(
                clean=round(clean, 2), perturbed=round(perturbed, 2), drop=round(clean - perturbed, 2),
                **{"drop 95% CI": f"[{100 * low:.2f}, {100 * high:.2f}]"},
                **{"clean mPCK": round(float(np.mean([100 * r.metrics["clean"]["overall"]["mPCK"] for r in members])), 2)},
                **{"perturbed mPCK": round(float(np.mean([100 * p["overall"]["mPCK"] for p in points])), 2)},
                changed=_changed(points), splits=len(members),
            )
            rows.append(row)
    return pd.DataFrame(rows, columns=ROBUSTNESS_COLUMNS) if rows else pd.DataFrame(columns=ROBUSTNESS_COLUMNS)


def _changed(points: list[dict]) -> str:
    records = [p["perturbation"] for p in points]
    if "pairs_changed" in records[0]:
        return f"{sum(r['pairs_changed'] for r in records)}/{sum(r['pairs_total'] for r in records)} pairs"
    strings = sum(r["strings_changed"] for r in records)
    return f"{strings}/{sum(r['strings_total'] for r in records)} strings, {sum(r['categories_changed'] for r in records)} categories"


def published_robustness_rows(path: Path) -> pd.DataFrame:
    """CapeNext Tables 4 (class noise) and 5 (keypoint noise), with the paper's clean numbers beside them."""
    with open(path, newline="") as handle:
        records = [r for r in csv.DictReader(handle) if r["metric"] == HEADLINE]
    clean_lookup = {(r["source"], r["table"], r["method"], r["img_backbone"]): r for r in records}
    rows = []
    for record in records:
        if not record["setting"].startswith("noisy"):
            continue
        if record["setting"].startswith("noisy class"):
            noise = "class (every pair's class name replaced by a wrong category)"
        else:
            detail = record["setting"].split(":", 1)[1].split(";", 1)[0].strip()
            noise = detail.replace("->", "→")
        table, clean_method = PUBLISHED_CLEAN.get(record["method"], (None, None))
        clean_row = clean_lookup.get((record["source"], table, clean_method, "Swinv2-T"))
        clean = float(clean_row["avg"]) if clean_row else None
        perturbed = float(record["avg"])
        row = {
            "dataset": "mp100", "noise": noise, "rate": 1.0, "method": f"{record['method']} (published)",
            "config": "Swinv2-T/CLIP ViT-B/32", "source": f"{record['source']} {record['table']}" + (f", clean: {table}" if clean_row else ""),
            **{f"split{k}": float(record[f"split{k}"]) if record[f"split{k}"] else None for k in range(1, 6)},
            "clean": clean, "perturbed": perturbed, "drop": None if clean is None else round(clean - perturbed, 2),
        }
        rows.append(row)
    return pd.DataFrame(rows, columns=ROBUSTNESS_COLUMNS) if rows else pd.DataFrame(columns=ROBUSTNESS_COLUMNS)


# ------------------------------------------------------------------ efficiency
EFFICIENCY_COLUMNS = [
    "method", "config", "device", "dtype", "batch", "params (M)", "trainable (M)", "frozen (M)",
    "GFLOPs query", "GFLOPs prompt", "query ms", "query p90 ms", "query FPS", "full ms", "full FPS", "peak memory (MiB)", "timed calls", "source",
]


def efficiency_table(profiles: list[dict]) -> pd.DataFrame:
    """One row per stored profile, dtype and batch size."""
    rows = []
    for record in sorted(profiles, key=lambda r: (r["method"], r["config_name"], r["conditions"]["device_name"])):
        params, flops, conditions = record["params"], record.get("flops") or {}, record["conditions"]
        device = ("GPU " if conditions["device"] == "cuda" else "CPU ") + conditions["device_name"]
        if conditions["device"] == "cpu":
            device += f" ({conditions.get('threads', '?')} threads)"
        if conditions.get("compile"):
            device += ", compiled"
        for latency in record["latency"]:
            memory = latency["memory"]
            rows.append({
                "method": record["method"], "config": record["config_name"], "device": device, "dtype": latency["dtype"], "batch": latency["batch"],
                "params (M)": round(params["total"] / 1e6, 3), "trainable (M)": round(params["trainable"] / 1e6, 3), "frozen (M)": round(params["frozen"] / 1e6, 3),
                "GFLOPs query": _gflops(flops, "query", "full"), "GFLOPs prompt": _gflops(flops, "prompt"),
                "query ms": _sig(latency["latency_ms"]), "query p90 ms": _sig(latency["p90_ms"]),
                "query FPS": _sig(latency["fps"]), "full ms": _sig(latency["full_ms"]), "full FPS": _sig(latency.get("full_fps")),
                "peak memory (MiB)": None if memory["peak_mib"] is None else round(memory["peak_mib"], 1),
                "timed calls": conditions.get("iters"),
                "source": f"cape-bench profile ({record['weights'].split(' (')[0]})",
            })
    return pd.DataFrame(rows, columns=EFFICIENCY_COLUMNS) if rows else pd.DataFrame(columns=EFFICIENCY_COLUMNS)


def _sig(value: float | None, digits: int = 4):
    """Four significant digits: a 0.0004 ms CPU call stays visible next to a 60 ms GPU one."""
    return None if value is None else float(f"{value:.{digits}g}")


def _gflops(flops: dict, *stages: str):
    for stage in stages:
        if stage in flops:
            return _sig(flops[stage]["flops"] / 1e9)
    return None


def published_efficiency_rows(path: Path) -> pd.DataFrame:
    """The fusion paper's Table 5 (RTX 3060; FLOPs convention, inputs and text-encoder inclusion not stated)."""
    metrics = {"FLOPs (G)": "GFLOPs query", "Params (M)": "params (M)", "Time (ms)": "full ms", "FPS": "full FPS"}
    by_method: dict[str, dict] = {}
    with open(path, newline="") as handle:
        for record in csv.DictReader(handle):
            if record["metric"] in metrics and record["avg"]:
                row = by_method.setdefault(record["method"], {
                    "method": f"{record['method']} (published)", "config": record["img_backbone"], "device": "GPU RTX 3060 (paper)",
                    "dtype": "not stated", "batch": 1, "source": f"{record['source']} {record['table']}",
                })
                row[metrics[record["metric"]]] = float(record["avg"])
    return pd.DataFrame(list(by_method.values()), columns=EFFICIENCY_COLUMNS) if by_method else pd.DataFrame(columns=EFFICIENCY_COLUMNS)


ROBUSTNESS_NOTE = (
    "Clean and perturbed PCK@0.2 (%) on the same episodes; drop = clean - perturbed (points), with a paired bootstrap "
    "95% CI over episodes (stratified by split); per-split columns are the perturbed values. Published rows: CapeNext Table 4 (class noise) and Table 5 (keypoint noise: single values, "
    "presumably 5-split means; typo = CapeX's hand-written lists, substitutions only in categories whose texts come from "
    "JSON names), clean values from the same paper's Tables 1-2."
)
EFFICIENCY_NOTE = (
    "Ours: `cape-bench profile`, pre-loaded tensors at the config's input size (256 px full size, 128 px tiny), median over the row's timed calls after warm-up (>= 100 for reported numbers; fewer is a quick measurement); query = image path + "
    "head per query with the prompt encoded once per category, full = prompt + image + head (the per-sample forward upstream "
    "scripts time); FLOPs from torch FlopCounterMode (2 x MACs, matmul/conv/attention only), GFLOPs at batch 1. "
    "CPU rows are CPU timings, not comparable with GPU rows. Published rows (fusion paper Table 5): RTX 3060, 100 runs; "
    "FLOP tool/convention, input shapes and whether text encoding is included are not stated (placed in the query column); "
    "Time/FPS placed in the full-forward columns."
)


def render_markdown(main: pd.DataFrame, published: pd.DataFrame, supercategories: pd.DataFrame,
                    robustness: pd.DataFrame | None = None, efficiency: pd.DataFrame | None = None, figures: list[str] | None = None) -> str:
    parts = ["# cape-bench leaderboard", "", "Generated by `cape-bench leaderboard` from `results/runs/`; do not edit by hand.", ""]
    for dataset in sorted(set(main.get("dataset", []))):
        mine = main[main["dataset"] == dataset].drop(columns=["dataset"])
        title = "MP-100, PCK@0.2 (%)" if dataset == "mp100" else "Built-in demo data (synthetic; not comparable with MP-100 numbers), PCK@0.2 (%)"
        parts += [f"## {title}", "", mine.to_markdown(index=False), ""]
    if not published.empty:
        parts += [
            "## Published reference rows (MP-100 1-shot PCK@0.2, as printed in the papers; not run here)",
            "",
            published.drop(columns=["dataset"]).to_markdown(index=False),
            "",
        ]
    if not supercategories.empty:
        parts += ["## PCK@0.2 (%) per supercategory", "", supercategories.to_markdown(index=False), ""]
    if robustness is not None and not robustness.empty:
        parts += ["## Prompt robustness, PCK@0.2 (%)", "", ROBUSTNESS_NOTE, "", _compact(robustness).to_markdown(index=False), ""]
    if efficiency is not None and not efficiency.empty:
        parts += ["## Efficiency", "", EFFICIENCY_NOTE, "", _compact(efficiency).to_markdown(index=False), ""]
    for figure in figures or []:
        parts += [f"![{Path(figure).stem}]({figure})", ""]
    return "\n".join(parts)


def _compact(frame: pd.DataFrame) -> pd.DataFrame:
    """Drop all-empty columns (e.g. splits nobody ran) and show missing cells as '-'."""
    frame = frame.dropna(axis=1, how="all").copy()
    for column in ("splits", "batch"):
        if column in frame:
            frame[column] = frame[column].astype("Int64")
    return frame.astype(object).where(frame.notna(), "-")


def _matches(label: str, protocol: str | None) -> bool:
    return protocol is None or label == protocol or label.startswith(protocol + "-")


def write_leaderboard(results=None, protocol: str | None = None, dataset: str | None = None, formats=("md",), output: Path | None = None, readme: Path | None = None) -> list[Path]:
    """Render every table from the stored runs and profiles; returns the files written.

    Markdown: `<results>/leaderboard.md` (or `output`); CSV: `leaderboard.csv`
    (main + published rows), `leaderboard.robustness.csv`,
    `leaderboard.efficiency.csv` beside it; `readme`: the section between the
    leaderboard markers regenerated (with the figures under `<results>/figures/`).
    """
    from cape_bench.profiling import load_profiles

    root = results_root(results)
    store = ResultStore(root)
    runs = [r for r in store.all() if _matches(r.protocol, protocol) and (dataset is None or r.dataset == dataset)]
    main = main_table(runs)
    published_file = published_csv(root)
    published = published_rows(published_file)
    supercategories = supercategory_table(runs)
    robustness = robustness_table(runs)
    if not robustness.empty and (protocol is None or protocol.startswith("robustness")):
        robustness = pd.concat([robustness, published_robustness_rows(published_file)], ignore_index=True)
    efficiency = pd.DataFrame(columns=EFFICIENCY_COLUMNS)
    if protocol in (None, "efficiency"):
        efficiency = efficiency_table(load_profiles(root))
        if not efficiency.empty:
            efficiency = pd.concat([efficiency, published_efficiency_rows(published_file)], ignore_index=True)
    written = []
    markdown_path = Path(output or root / "leaderboard.md")
    unknown = [f for f in formats if f not in ("md", "csv")]
    if unknown:
        from cape_bench.errors import ConfigError

        raise ConfigError(f"--format takes md, csv or md,csv; got {', '.join(unknown)}")
    if "md" in formats:
        markdown_path.parent.mkdir(parents=True, exist_ok=True)
        markdown_path.write_text(render_markdown(main, published, supercategories, robustness, efficiency))
        written.append(markdown_path)
    if "csv" in formats:
        markdown_path.parent.mkdir(parents=True, exist_ok=True)
        csv_path = markdown_path.with_suffix(".csv")
        pd.concat([main, published], ignore_index=True).to_csv(csv_path, index=False)
        written.append(csv_path)
        for name, frame in (("robustness", robustness), ("efficiency", efficiency)):
            if not frame.empty:
                extra = markdown_path.with_suffix(f".{name}.csv")
                frame.to_csv(extra, index=False)
                written.append(extra)
    if readme is not None:
        readme = Path(readme)
        figures = sorted((root / "figures").glob("*.png")) if (root / "figures").is_dir() else []
        shown = [p for p in figures if p.name.startswith("robustness")][:1] + [p for p in figures if p.name.startswith("latency")][:1]
        links = [os.path.relpath(p.resolve(), readme.resolve().parent) for p in shown]
        update_readme(readme, render_markdown(main, pd.DataFrame(), supercategories, robustness, efficiency, links))
        written.append(readme)
    return written


def update_readme(readme: Path, markdown: str) -> None:
    """Replace the README section between the leaderboard markers with `markdown` (headings one level down).

    Raises:
        ConfigError: the file is missing or lacks the two markers.
    """
    from cape_bench.errors import ConfigError

    if not readme.is_file():
        raise ConfigError(f"--readme {readme}: file not found")
    text = readme.read_text()
    if README_START not in text or README_END not in text:
        raise ConfigError(f"--readme {readme}: no {README_START} ... {README_END} section to regenerate")
    body = "\n".join(("#" + line if line.startswith("#") else line) for line in markdown.splitlines()[2:])
    head, _, rest = text.partition(README_START)
    _, _, tail = rest.partition(README_END)
    readme.write_text(f"{head}{README_START}\n{body.strip()}\n{README_END}{tail}")
