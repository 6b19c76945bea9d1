"""Leaderboard tables from stored runs, with the papers' numbers as marked reference rows.

Our rows carry a 95% confidence interval of the split mean from a bootstrap
over episodes, stratified by split (episodes resampled within each split),
from the per-episode PCK stored in each result. Published rows come from the
seed papers (`results/published.csv`, shipped as `cape_bench/data/published.csv`;
every number checked against the seed documents) and never mix into our means.
"""
from __future__ import annotations

import csv
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


def main_table(results: list[RunResult]) -> pd.DataFrame:
    """One row per (dataset, protocol, method-config): PCK@0.2 per split, mean, CI, mPCK."""
    groups: dict[tuple, list[RunResult]] = defaultdict(list)
    for result in results:
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
            if record["metric"] != HEADLINE or not record["split1"]:
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
    for result in results:
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


def render_markdown(main: pd.DataFrame, published: pd.DataFrame, supercategories: pd.DataFrame) -> str:
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
    return "\n".join(parts)


def write_leaderboard(results=None, protocol: str | None = None, dataset: str | None = None, formats=("md",), output: Path | None = None, readme: Path | None = None) -> list[Path]:
    root = results_root(results)
    store = ResultStore(root)
    runs = [r for r in store.all() if (protocol is None or r.protocol == protocol) and (dataset is None or r.dataset == dataset)]
    main = main_table(runs)
    published = published_rows(published_csv(root))
    supercategories = supercategory_table(runs)
    written = []
    markdown_path = Path(output or root / "leaderboard.md")
    if "md" in formats:
        markdown_path.parent.mkdir(parents=True, exist_ok=True)
        markdown_path.write_text(render_markdown(main, published, supercategories))
        written.append(markdown_path)
    if "csv" in formats:
        csv_path = markdown_path.with_suffix(".csv")
        pd.concat([main, published], ignore_index=True).to_csv(csv_path, index=False)
        written.append(csv_path)
    if readme is not None:
        update_readme(readme, render_markdown(main, pd.DataFrame(), supercategories))
        written.append(readme)
    return written


def update_readme(readme: Path, markdown: str) -> None:
    """Replace the README section between the leaderboard markers with `markdown` (headings demoted)."""
    text = readme.read_text()
    if README_START not in text or README_END not in text:
        return
    body = "\n".join(("##" + line if line.startswith("#") else line) for line in markdown.splitlines()[2:])
    head, _, rest = text.partition(README_START)
    _, _, tail = rest.partition(README_END)
    readme.write_text(f"{head}{README_START}\n{body.strip()}\n{README_END}{tail}")
