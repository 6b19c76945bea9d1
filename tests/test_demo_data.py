"""The built-in demo dataset: MP-100 layout, split structure, determinism and caching."""

from __future__ import annotations

import csv
import functools
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cape_bench.data import demo
from cape_bench.data.demo import (
    DEMO_VERSION,
    ensure_demo_dataset,
    generate_demo_dataset,
)
from cape_bench.data.layout import DatasetRoot
from cape_bench.data.text_overlap import dataset_overlap
from cape_bench.errors import ConfigError

SUBSETS = ("train", "val", "test")
SPLIT_FILES = [(k, subset) for k in range(1, 6) for subset in SUBSETS]
EIGHT_SUPERCATEGORIES = {"animal_body", "animal_face", "human_body", "human_face", "human_hand",
                         "clothes", "furniture", "vehicle"}
MP100_CSV = Path(demo.__file__).with_name("mp100_categories.csv")


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def demo_root(cache_dir) -> Path:
    # The one full-size generation of this module, through the cache entry point.
    return ensure_demo_dataset(cache_dir=cache_dir, seed=0)


@pytest.fixture(scope="module")
def split_json(demo_root) -> dict[tuple[int, str], dict]:
    return {(k, s): json.loads((demo_root / "annotations" / f"mp100_split{k}_{s}.json").read_text())
            for k, s in SPLIT_FILES}


@pytest.fixture(scope="module")
def all_categories(split_json) -> dict[int, dict]:
    return {c["id"]: c for d in split_json.values() for c in d["categories"]}


@pytest.fixture(scope="module")
def all_annotations(split_json) -> dict[int, dict]:
    return {a["id"]: a for d in split_json.values() for a in d["annotations"]}


@pytest.fixture(scope="module")
def all_images(split_json) -> dict[int, dict]:
    return {i["id"]: i for d in split_json.values() for i in d["images"]}


def _small(root: Path, seed: int = 0) -> Path:
    return generate_demo_dataset(root, seed=seed, instances_per_category=2)


def _file_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_cache_path_and_files(demo_root, cache_dir):
    assert demo_root == cache_dir / f"demo-v{DEMO_VERSION}-seed0"
    for k, subset in SPLIT_FILES:
        assert (demo_root / "annotations" / f"mp100_split{k}_{subset}.json").is_file()
    assert len(list((demo_root / "annotations").iterdir())) == 15
    assert (demo_root / "keypoint_texts.json").is_file()
    assert [p.name for p in cache_dir.iterdir()] == [demo_root.name]  # no temporary folder left behind


def test_split_files_load_with_pycocotools(demo_root, split_json):
    from pycocotools.coco import COCO

    for k, subset in SPLIT_FILES:
        coco = COCO(str(demo_root / "annotations" / f"mp100_split{k}_{subset}.json"))
        data = split_json[(k, subset)]
        assert set(data) == {"info", "images", "annotations", "categories"}
        assert sorted(coco.getCatIds()) == sorted(c["id"] for c in data["categories"])
        assert len(coco.getAnnIds()) == len(data["annotations"]) > 0
        # Episodes are drawn for every category getCatIds() returns, so none may be empty.
        for cid in coco.getCatIds():
            assert coco.getAnnIds(catIds=[cid])


def test_split_structure(split_json, all_categories):
    test_count = Counter()
    for k in range(1, 6):
        ids = {s: {c["id"] for c in split_json[(k, s)]["categories"]} for s in SUBSETS}
        assert not ids["train"] & ids["val"] and not ids["train"] & ids["test"] and not ids["val"] & ids["test"]
        assert ids["train"] | ids["val"] | ids["test"] == set(all_categories)
        assert (len(ids["train"]), len(ids["val"]), len(ids["test"])) == (70, 10, 20)  # MP-100's shape
        test_count.update(ids["test"])
        for s in SUBSETS:
            data = split_json[(k, s)]
            image_ids = {i["id"] for i in data["images"]}
            assert {a["category_id"] for a in data["annotations"]} == ids[s]
            assert {a["image_id"] for a in data["annotations"]} == image_ids
    assert test_count == Counter(set(all_categories))  # every category is a test category exactly once


def test_categories(all_categories):
    with MP100_CSV.open(newline="") as f:
        mp100 = list(csv.DictReader(f))
    mp100_names = {row["name"] for row in mp100} | {row["image_folder"] for row in mp100}
    assert len(all_categories) >= 40
    assert sorted(all_categories) == list(range(1, len(all_categories) + 1))
    supercategories = {c["supercategory"] for c in all_categories.values()}
    assert len(supercategories) >= 6 and supercategories <= EIGHT_SUPERCATEGORIES
    names = [c["name"] for c in all_categories.values()]
    assert len(set(names)) == len(names)
    assert not set(names) & mp100_names
    for c in all_categories.values():
        k = len(c["keypoints"])
        assert 5 <= k <= 30
        assert len(set(c["keypoints"])) == k
        assert c["skeleton"]
        for i, j in c["skeleton"]:
            assert 0 <= i < k and 0 <= j < k and i != j


def test_images_exist_with_declared_size(demo_root, all_images, all_categories):
    folders = {f"demo_{c['name']}" for c in all_categories.values()}
    for img in all_images.values():
        assert img["file_name"].split("/")[0] in folders
        with Image.open(demo_root / "images" / img["file_name"]) as im:
            assert im.format == "JPEG"
            assert im.size == (img["width"], img["height"])
        assert 160 <= img["width"] <= 224 and 160 <= img["height"] <= 224


def test_annotations(all_annotations, all_images, all_categories):
    visibility = Counter()
    for a in all_annotations.values():
        k = len(all_categories[a["category_id"]]["keypoints"])
        kps = np.asarray(a["keypoints"], dtype=float).reshape(-1, 3)
        assert len(a["keypoints"]) == 3 * k
        assert set(kps[:, 2]) <= {0.0, 1.0, 2.0}
        visibility.update(kps[:, 2].tolist())
        assert a["num_keypoints"] == int((kps[:, 2] > 0).sum()) >= 3
        assert np.all(kps[kps[:, 2] == 0, :2] == 0)  # COCO: unlabelled keypoints carry no position
        img = all_images[a["image_id"]]
        x, y, w, h = a["bbox"]
        assert w >= 4 and h >= 4 and x >= 0 and y >= 0
        assert x + w <= img["width"] + 1e-6 and y + h <= img["height"] + 1e-6
        assert a["area"] > 0 and a["iscrowd"] == 0
        labelled = kps[kps[:, 2] > 0, :2]
        assert np.all((labelled >= [x, y]) & (labelled <= [x + w, y + h]))
    # Both MP-100 occlusion conventions appear: unlabelled (v=0) and labelled-but-occluded (v=1).
    assert visibility[0.0] > 0 and visibility[1.0] > 0 and visibility[2.0] > visibility[1.0]
    per_image = Counter(a["image_id"] for a in all_annotations.values())
    assert max(per_image.values()) == 2 and min(per_image.values()) == 1
    assert len({a["id"] for a in all_annotations.values()}) == len(all_annotations)


def test_most_test_categories_have_a_training_sibling_as_in_mp100(demo_root, all_categories):
    """Species families share keypoint descriptions, so text support meets mostly known keypoints, as on MP-100."""
    texts = json.loads((demo_root / "keypoint_texts.json").read_text())
    splits = dataset_overlap(DatasetRoot(demo_root))
    assert len(splits) == 5
    assert all(0.8 <= split.fraction("test") <= 0.95 for split in splits)  # MP-100's published splits: 0.83 to 0.95
    by_name = {c["name"]: c for c in all_categories.values()}
    species = [by_name[name] for name in ("gecko_body", "crocodile_body", "wyvern_body", "lynx_face")]
    bases = [by_name[name] for name in ("lizard_body", "lizard_body", "dragon_body", "koala_face")]
    for one, base in zip(species, bases):
        assert (one["keypoints"], one["skeleton"], one["supercategory"]) == \
            (base["keypoints"], base["skeleton"], base["supercategory"])
        assert texts[str(one["id"])] == texts[str(base["id"])]


def test_species_differ_from_their_base_in_proportions():
    templates = {spec.name: t for _, spec, t in demo._category_templates()}
    base = templates["lizard_body"]
    for name in ("gecko_body", "crocodile_body"):
        assert templates[name].descriptions == base.descriptions
        # Beyond the per-instance jitter of `_pose` (6% per bone): species differ in build.
        assert np.abs(templates[name].rest - base.rest).max() > 0.1
    assert np.abs(templates["gecko_body"].rest - templates["crocodile_body"].rest).max() > 0.1


def test_instances_per_category(split_json):
    for k in range(1, 6):
        for subset in SUBSETS:
            counts = Counter(a["category_id"] for a in split_json[(k, subset)]["annotations"])
            assert min(counts.values()) >= 30  # an episode draws 16 distinct instances


def test_keypoint_texts(demo_root, all_categories):
    texts = json.loads((demo_root / "keypoint_texts.json").read_text())
    assert set(texts) == {str(cid) for cid in all_categories}
    for cid, c in all_categories.items():
        regular = texts[str(cid)]["regular"]
        assert len(regular) == len(c["keypoints"])
        assert all(isinstance(t, str) and t.strip() for t in regular)
        assert len(set(regular)) == len(regular)
        assert sum(len(t) for t in regular) > sum(len(n) for n in c["keypoints"])


def test_demo_json(demo_root, all_images, all_annotations, all_categories):
    meta = json.loads((demo_root / "DEMO.json").read_text())
    assert meta["generator"] == "cape_bench demo" and meta["version"] == DEMO_VERSION and meta["seed"] == 0
    assert meta["num_images"] == len(all_images)
    assert meta["num_annotations"] == len(all_annotations)
    assert meta["num_categories"] == len(all_categories)


def test_same_seed_same_bytes_other_seed_differs(tmp_path):
    first = _file_bytes(_small(tmp_path / "a"))
    second = _file_bytes(_small(tmp_path / "b"))
    assert first.keys() == second.keys()
    assert first == second
    other = _file_bytes(_small(tmp_path / "c", seed=1))
    assert other["annotations/mp100_split1_test.json"] != first["annotations/mp100_split1_test.json"]
    sample = sorted(k for k in first if k.endswith(".jpg"))[::20]
    assert all(other[k] != first[k] for k in sample if k in other)


def test_small_dataset_keeps_the_layout(tmp_path):
    root = _small(tmp_path / "small")
    data = json.loads((root / "annotations" / "mp100_split3_val.json").read_text())
    assert Counter(a["category_id"] for a in data["annotations"]) == {c["id"]: 2 for c in data["categories"]}


def test_rejects_empty_dataset(tmp_path):
    with pytest.raises(ConfigError, match="instances_per_category"):
        generate_demo_dataset(tmp_path, instances_per_category=0)


def test_ensure_reuses_existing_dataset(demo_root, cache_dir, monkeypatch):
    marker = demo_root / "DEMO.json"
    image = next((demo_root / "images").rglob("*.jpg"))
    before = (marker.stat().st_mtime_ns, image.stat().st_mtime_ns)

    def must_not_run(*args, **kwargs):
        raise AssertionError("ensure_demo_dataset regenerated a complete dataset")

    monkeypatch.setattr(demo, "generate_demo_dataset", must_not_run)
    assert ensure_demo_dataset(cache_dir=cache_dir, seed=0) == demo_root
    assert (marker.stat().st_mtime_ns, image.stat().st_mtime_ns) == before


def test_ensure_default_cache_and_stale_copy(tmp_path, monkeypatch):
    monkeypatch.setattr(demo, "generate_demo_dataset",
                        functools.partial(generate_demo_dataset, instances_per_category=1))
    monkeypatch.setenv("CAPE_BENCH_CACHE", str(tmp_path))
    stale = tmp_path / f"demo-v{DEMO_VERSION}-seed3"
    stale.mkdir()
    (stale / "DEMO.json").write_text(json.dumps({"generator": "cape_bench demo", "version": 0, "seed": 3}))
    root = ensure_demo_dataset(seed=3)
    assert root == stale
    assert json.loads((root / "DEMO.json").read_text())["version"] == DEMO_VERSION
    assert [p.name for p in tmp_path.iterdir()] == [root.name]


def test_ensure_leaves_nothing_behind_on_failure(tmp_path, monkeypatch):
    def crash(root, seed=0):
        (Path(root) / "annotations").mkdir(parents=True)
        raise KeyboardInterrupt

    monkeypatch.setattr(demo, "generate_demo_dataset", crash)
    with pytest.raises(KeyboardInterrupt):
        ensure_demo_dataset(cache_dir=tmp_path, seed=0)
    assert list(tmp_path.iterdir()) == []
