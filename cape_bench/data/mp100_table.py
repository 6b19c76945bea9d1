"""The 100 MP-100 categories as published: id, JSON name, folder, paper supercategory, splits.

Source: `mp100_categories.csv`, derived from the original MP-100 split JSONs
(Pose-for-Everything); shipped with the package so that `data verify` can check
a local install and the paper's 8-way supercategory is known for every id.
"""
from __future__ import annotations

import csv
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

SUPERCATEGORIES = (
    "animal_body",
    "animal_face",
    "clothes",
    "furniture",
    "human_body",
    "human_face",
    "human_hand",
    "vehicle",
)
NUM_SPLITS = 5


@dataclass(frozen=True)
class MP100Category:
    id: int
    name: str
    folder: str
    supercategory: str
    num_keypoints: int
    test_split: int
    val_splits: tuple[int, ...]

    def role_in_split(self, split: int) -> str:
        if split == self.test_split:
            return "test"
        return "val" if split in self.val_splits else "train"


@lru_cache(maxsize=1)
def mp100_categories() -> dict[int, MP100Category]:
    """Category id -> published facts, in id order."""
    text = resources.files("cape_bench.data").joinpath("mp100_categories.csv").read_text()
    table = {}
    for row in csv.DictReader(text.splitlines()):
        table[int(row["id"])] = MP100Category(
            id=int(row["id"]),
            name=row["name"],
            folder=row["image_folder"],
            supercategory=row["mp100_supercategory"],
            num_keypoints=int(row["num_kpts"]),
            test_split=int(row["test_split"]),
            val_splits=tuple(int(s) for s in row["val_splits"].split(";") if s),
        )
    return table


def mp100_category(category_id: int, name: str) -> MP100Category | None:
    """The published category with this id AND name, or None (e.g. demo data)."""
    known = mp100_categories().get(category_id)
    return known if known is not None and known.name == name else None


def expected_category_ids(split: int, subset: str) -> list[int]:
    """Ids that the official `mp100_split{split}_{subset}.json` must contain."""
    return [c.id for c in mp100_categories().values() if c.role_in_split(split) == subset]
