"""The packaged keypoint text file: one description per keypoint slot for all 100 MP-100 categories.

The file is the default for text-support methods and has the same schema as a user's
`--keypoint-texts FILE`: {"<id>": {"name": ..., "regular": [...], "json_keypoints": [...] (optional)}}.
"""
import csv
import importlib.resources
import json
from pathlib import Path

import pytest

TEXTS_FILE = "mp100_keypoint_texts.json"
CATEGORIES_FILE = "mp100_categories.csv"

# Categories whose annotation keypoint names are plain words: the 34 AP-10K bodies, person (COCO),
# macaque (MacaquePose) and the 8 CUB birds. Their descriptions are the names with "_" -> " ".
# hand, fly and locust have coded names (thumb1, forelegL2, ...) and get written descriptions instead.
AP10K_BODY_IDS = [2, 3, 5, 6, 9, 15, 20, 21, 26, 27, 29, 30, 31, 33, 35, 42, 43, 50, 52, 54,
                  55, 58, 68, 70, 71, 73, 76, 85, 87, 88, 90, 91, 95, 100]
BIRD_IDS = [14, 16, 28, 41, 46, 53, 59, 86]
NAME_DERIVED_IDS = sorted(AP10K_BODY_IDS + BIRD_IDS + [72, 92])


def _data_file(name: str):
    """A file of the `cape_bench.data` package, or of the checkout when the package is not importable."""
    try:
        return importlib.resources.files("cape_bench.data") / name
    except ModuleNotFoundError:
        return Path(__file__).resolve().parent.parent / "cape_bench" / "data" / name


@pytest.fixture(scope="module")
def texts() -> dict:
    return json.loads(_data_file(TEXTS_FILE).read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def categories() -> dict[str, dict]:
    with _data_file(CATEGORIES_FILE).open(encoding="utf-8", newline="") as f:
        return {row["id"]: row for row in csv.DictReader(f)}


def test_one_entry_per_category(texts, categories):
    assert len(categories) == 100
    assert set(texts) == {str(i) for i in range(1, 101)} == set(categories)


def test_names_match_category_table(texts, categories):
    for cid, entry in texts.items():
        assert entry["name"] == categories[cid]["name"], cid


def test_schema(texts):
    for cid, entry in texts.items():
        assert set(entry) <= {"name", "regular", "json_keypoints"}, cid
        assert isinstance(entry["regular"], list), cid


def test_one_text_per_keypoint(texts, categories):
    for cid, entry in texts.items():
        assert len(entry["regular"]) == int(categories[cid]["num_kpts"]), (cid, entry["name"])
        if "json_keypoints" in entry:
            assert len(entry["json_keypoints"]) == int(categories[cid]["num_kpts"]), (cid, entry["name"])


def test_texts_are_nonempty_lowercase_strings(texts):
    for cid, entry in texts.items():
        for text in entry["regular"]:
            assert isinstance(text, str) and text.strip() == text and text, (cid, text)
            assert text == text.lower(), (cid, text)


def test_texts_are_distinct_within_a_category(texts):
    # A repeated description would make two slots indistinguishable to a text encoder.
    for cid, entry in texts.items():
        regular = entry["regular"]
        assert len(set(regular)) == len(regular), (cid, entry["name"])


def test_name_derived_categories_use_annotation_names(texts):
    assert len(NAME_DERIVED_IDS) == 44
    for cid in map(str, NAME_DERIVED_IDS):
        entry = texts[cid]
        assert "json_keypoints" in entry, cid
        assert entry["regular"] == [n.replace("_", " ") for n in entry["json_keypoints"]], (cid, entry["name"])


def test_other_categories_have_written_descriptions(texts):
    # Numbered (clothes, furniture, vehicles, animal faces) or coded (hand, fly, locust) annotation names
    # must not leak through as descriptions.
    written = set(texts) - set(map(str, NAME_DERIVED_IDS))
    assert len(written) == 56
    for cid in written:
        entry = texts[cid]
        names = [n.replace("_", " ") for n in entry.get("json_keypoints", [])]
        assert entry["regular"] != names, (cid, entry["name"])
        assert not any(text.isdigit() for text in entry["regular"]), (cid, entry["name"])
