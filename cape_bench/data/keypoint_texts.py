"""Keypoint text descriptions per category, from the first source that has them.

Order: a user file (`--keypoint-texts FILE`), the dataset's own
`keypoint_texts.json`, the descriptions shipped for the 100 MP-100 categories
(matched by id AND name), then the JSON keypoint names with `_` -> space when
they are words. Files map category id -> {variant -> [one string per keypoint]};
a list of {"id": ..., "<variant>": [...]} records (the layout other CAPE code
bases export) is accepted too, and a `_test` suffix on variant names is ignored.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from cape_bench.data.mp100_table import mp100_category
from cape_bench.data.records import Category
from cape_bench.errors import DatasetError

DEFAULT_VARIANT = "regular"
PACKAGED_FILE = "mp100_keypoint_texts.json"


@dataclass
class TextSource:
    """One description file: category id -> variant -> strings."""

    origin: str
    lists: dict[int, dict[str, list[str]]]
    mp100_only: bool = False

    def lookup(self, category: Category, variant: str) -> list[str] | None:
        if self.mp100_only and mp100_category(category.id, category.name) is None:
            return None
        return self.lists.get(category.id, {}).get(variant)


def parse_text_file(raw, origin: str) -> dict[int, dict[str, list[str]]]:
    """Validate and normalise either accepted layout; errors name the file and record."""
    if isinstance(raw, dict):
        records = list(raw.items())
    elif isinstance(raw, list):
        records = [(item.get("id") if isinstance(item, dict) else None, item) for item in raw]
    else:
        raise DatasetError(f"{origin}: expected a JSON object {{category id: {{variant: [strings]}}}} or a list of records")
    lists: dict[int, dict[str, list[str]]] = {}
    for key, entry in records:
        try:
            category_id = int(key)
        except (TypeError, ValueError):
            raise DatasetError(f"{origin}: record key {key!r} is not a category id") from None
        if not isinstance(entry, dict):
            raise DatasetError(f"{origin}: category {category_id}: expected {{variant: [strings]}}, got {type(entry).__name__}")
        variants = {}
        for variant, strings in entry.items():
            if variant in ("id", "name", "supercategory", "test_split", "json_keypoints"):
                continue
            if not isinstance(strings, list) or not all(isinstance(s, str) and s.strip() for s in strings):
                raise DatasetError(f"{origin}: category {category_id}, variant {variant!r}: expected a list of non-empty strings")
            variants[variant.removesuffix("_test")] = list(strings)
        lists[category_id] = variants
    return lists


def load_text_file(path: str | Path) -> TextSource:
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{path}: keypoint-text file not found")
    try:
        raw = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise DatasetError(f"{path}: not valid JSON ({error})") from None
    return TextSource(str(path), parse_text_file(raw, str(path)))


def packaged_texts() -> TextSource:
    resource = resources.files("cape_bench.data").joinpath(PACKAGED_FILE)
    return TextSource(f"cape_bench/data/{PACKAGED_FILE}", parse_text_file(json.loads(resource.read_text()), PACKAGED_FILE), mp100_only=True)


def _names_are_words(names: tuple[str, ...]) -> bool:
    return bool(names) and not any(name.strip().isdigit() for name in names)


@dataclass
class KeypointTexts:
    """Resolves the description list of a category (see module docstring)."""

    sources: list[TextSource] = field(default_factory=list)

    @classmethod
    def for_dataset(cls, user_file: str | Path | None = None, dataset_file: Path | None = None) -> "KeypointTexts":
        sources = [load_text_file(path) for path in (user_file, dataset_file) if path is not None]
        return cls(sources + [packaged_texts()])

    def lookup(self, category: Category, variant: str = DEFAULT_VARIANT) -> tuple[list[str], str]:
        """(strings, origin) for `category`; raises `DatasetError` if no source has them."""
        for source in self.sources:
            strings = source.lookup(category, variant)
            if strings is not None:
                if len(strings) != category.num_keypoints:
                    raise DatasetError(
                        f"{source.origin}: category {category.id} ({category.name}), variant {variant!r}: "
                        f"{len(strings)} descriptions for {category.num_keypoints} keypoints"
                    )
                return strings, source.origin
        if variant == DEFAULT_VARIANT and _names_are_words(category.keypoint_names):
            return [name.replace("_", " ") for name in category.keypoint_names], "annotation keypoint names"
        raise DatasetError(
            f"no keypoint descriptions (variant {variant!r}) for category {category.id} ({category.name}): "
            "its annotation names are empty or digits; pass --keypoint-texts FILE with a list for it"
        )

    def texts(self, category: Category, variant: str = DEFAULT_VARIANT) -> list[str]:
        return self.lookup(category, variant)[0]
