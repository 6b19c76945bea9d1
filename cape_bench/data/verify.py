"""`cape-bench data verify`: is a local MP-100 install complete and as published?

Checks all 15 annotation files, the categories of each against the published
splits (for the demo data: that train/val/test are disjoint), instance filters
and missing images, and returns a report whose `ok` decides the exit code.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from cape_bench.data.layout import SPLITS, DatasetRoot
from cape_bench.data.mp100_table import expected_category_ids, mp100_categories
from cape_bench.data.records import SUBSETS
from cape_bench.errors import DatasetError


@dataclass
class VerifyReport:
    root: str
    lines: list[tuple[str, str]] = field(default_factory=list)

    def add(self, status: str, message: str) -> None:
        self.lines.append((status, message))

    @property
    def ok(self) -> bool:
        return all(status != "FAIL" for status, _ in self.lines)

    def render(self) -> str:
        body = "\n".join(f"[{status}] {message}" for status, message in self.lines)
        verdict = "OK: usable for cape-bench" if self.ok else "FAILED: see [FAIL] lines above"
        return f"MP-100 install at {self.root}\n{body}\n{verdict}"


def verify_dataset(root: DatasetRoot, check_images: bool = True, max_listed: int = 5) -> VerifyReport:
    report = VerifyReport(str(root.root))
    published = mp100_categories()
    for split in SPLITS:
        categories_by_subset = {}
        for subset in SUBSETS:
            path = root.annotation_path(split, subset)
            try:
                annotations = root.load(split, subset)
            except DatasetError as error:
                report.add("FAIL", str(error))
                continue
            ids = set(annotations.categories)
            categories_by_subset[subset] = ids
            line = f"{path.name}: {len(ids)} categories, {len(annotations.instances)} instances"
            if annotations.filtered.total:
                line += f", {annotations.filtered.total} filtered by the protocol ({annotations.filtered.summary()})"
            report.add("ok", line)
            if not root.is_demo:
                _check_published_split(report, path.name, ids, split, subset, published)
            if check_images:
                _check_images(report, root, annotations, path.name, max_listed)
        _check_disjoint(report, split, categories_by_subset)
    return report


def _check_published_split(report: VerifyReport, file_name: str, ids: set[int], split: int, subset: str, published) -> None:
    expected = set(expected_category_ids(split, subset))
    missing, unexpected = sorted(expected - ids), sorted(ids - expected)
    if missing or unexpected:
        names = lambda cids: ", ".join(f"{c} ({published[c].name})" if c in published else str(c) for c in cids)  # noqa: E731
        report.add("FAIL", f"{file_name}: categories differ from the published split: missing [{names(missing)}], unexpected [{names(unexpected)}]")


def _check_images(report: VerifyReport, root: DatasetRoot, annotations, file_name: str, max_listed: int) -> None:
    seen, missing = set(), []
    for instance in annotations.instances:
        if instance.file_name in seen:
            continue
        seen.add(instance.file_name)
        if not root.image_path(instance).is_file():
            missing.append(instance.file_name)
    if missing:
        listed = ", ".join(missing[:max_listed]) + (" ..." if len(missing) > max_listed else "")
        report.add("FAIL", f"{file_name}: {len(missing)} of {len(seen)} images missing under {root.image_root} ({listed})")


def _check_disjoint(report: VerifyReport, split: int, by_subset: dict[str, set[int]]) -> None:
    subsets = list(by_subset)
    for i, first in enumerate(subsets):
        for second in subsets[i + 1 :]:
            shared = by_subset[first] & by_subset[second]
            if shared:
                report.add("FAIL", f"split {split}: {first} and {second} share categories {sorted(shared)}")
