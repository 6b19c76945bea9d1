"""`data overlap`: the share of val/test keypoint descriptions a split's training categories already use."""
from __future__ import annotations

import json

import pytest
import torch

from cape_bench.cli import main
from cape_bench.data.layout import DatasetRoot
from cape_bench.data.text_overlap import dataset_overlap, mp100_table_overlap
from cape_bench.errors import DatasetError
from tests.test_cli import assert_one_line_error, run_cli

# Category id -> (name, descriptions). Train: 1, 2; val: 3; test: 4, 5.
_DESCRIBED = {
    1: ("paw_animal", ["left eye", "right eye", "nose"]),
    2: ("table_thing", ["left front leg", "right front leg"]),
    3: ("val_animal", ["Left  Eye", "tail tip"]),  # case and spacing do not make it new
    4: ("test_animal", ["left eye", "nose", "right eye", "tail tip"]),
    5: ("test_thing", ["first tentacle", "second tentacle"]),
}
_ROLES = {"train": (1, 2), "val": (3,), "test": (4, 5)}


def _write_root(root):
    (root / "annotations").mkdir(parents=True)
    for split in range(1, 6):
        for subset, ids in _ROLES.items():
            categories = [
                {"id": cid, "name": _DESCRIBED[cid][0], "supercategory": "x", "skeleton": [],
                 "keypoints": [f"k{i}" for i in range(len(_DESCRIBED[cid][1]))]}
                for cid in ids
            ]
            dataset = {"images": [], "annotations": [], "categories": categories}
            (root / "annotations" / f"mp100_split{split}_{subset}.json").write_text(json.dumps(dataset))
    (root / "keypoint_texts.json").write_text(json.dumps({cid: {"regular": texts} for cid, (_, texts) in _DESCRIBED.items()}))
    return root


def test_counts_seen_descriptions_per_category_and_weighs_categories_equally(tmp_path):
    overlaps = dataset_overlap(DatasetRoot(_write_root(tmp_path)))
    assert [o.split for o in overlaps] == [1, 2, 3, 4, 5]
    first = overlaps[0]
    assert first.train_descriptions == 5
    assert {(c.name, c.subset, c.seen, c.total) for c in first.categories} == {
        ("val_animal", "val", 1, 2), ("test_animal", "test", 3, 4), ("test_thing", "test", 0, 2)}
    assert first.fraction("val") == pytest.approx(0.5)
    assert first.fraction("test") == pytest.approx((3 / 4 + 0 / 2) / 2)  # not 3 / 6: categories weigh equally


def test_user_text_file_takes_precedence_and_a_missing_variant_is_an_error(tmp_path):
    root = _write_root(tmp_path / "root")
    user = tmp_path / "texts.json"
    user.write_text(json.dumps({5: {"regular": ["nose", "left eye"]}}))
    test_thing = [c for c in dataset_overlap(DatasetRoot(root), keypoint_texts=user)[0].categories if c.name == "test_thing"]
    assert [(c.seen, c.total) for c in test_thing] == [(2, 2)]
    # A category without the variant fails loudly instead of counting as unseen.
    with pytest.raises(DatasetError, match=r"variant 'short'\) for category 1 \(paw_animal\)"):
        dataset_overlap(DatasetRoot(root), variant="short")


def test_mp100_table_knows_the_published_splits():
    overlaps = {o.split: o for o in mp100_table_overlap()}
    split1 = {c.name: (c.subset, c.seen, c.total) for c in overlaps[1].categories}
    assert split1["horse_body"] == ("test", 17, 17)  # the shared 17-point animal-body descriptions
    assert split1["bed"][0] == "test" and split1["bed"][1] == 0
    assert sum(c.subset == "test" for c in overlaps[1].categories) == 20
    assert sum(c.subset == "val" for c in overlaps[1].categories) == 10


def test_cli_prints_one_row_per_split(tmp_path, capsys):
    assert main(["data", "overlap", "--root", str(_write_root(tmp_path)), "--per-category"]) == 0
    out = capsys.readouterr().out
    assert "| 3 | 5 | 0.50 | 0.38 |" in out
    assert "| 1 | test | test_thing | 0 / 2 |" in out


def test_nearest_cosine_under_an_encoder(tmp_path):
    import functools

    from cape_bench.nn.embedding_cache import EmbeddingCache
    from cape_bench.nn.text_encoders import HashTextEncoder

    cache = EmbeddingCache()
    embed = functools.partial(cache.encode, HashTextEncoder(dim=32))
    first = dataset_overlap(DatasetRoot(_write_root(tmp_path)), embed=embed)[0]
    nearest = {c.name: c.nearest_cosine for c in first.categories}
    trained = ["left eye", "right eye", "nose", "left front leg", "right front leg"]
    tail_tip = float((torch.nn.functional.normalize(embed(["tail tip"]), dim=-1) @ torch.nn.functional.normalize(embed(trained), dim=-1).T).max())
    assert tail_tip < 0.99
    assert nearest["test_animal"] == pytest.approx((3 * 1.0 + tail_tip) / 4)  # three of four occur in training
    assert first.nearest_cosine("test") == pytest.approx((nearest["test_animal"] + nearest["test_thing"]) / 2)
    # Nine distinct strings over all five splits, each encoded once.
    assert cache.misses == 9


def test_cli_encoder_column_and_bad_encoder_arguments(tmp_path, capsys):
    root = str(_write_root(tmp_path))
    assert main(["data", "overlap", "--root", root, "--encoder", "hash", "--encoder-options", "dim=16"]) == 0
    assert "test nearest cosine (hash)" in capsys.readouterr().out
    process = run_cli("data", "overlap", "--root", root, "--encoder", "minilm", "--encoder-options", "dim=16")
    assert_one_line_error(process, "text encoder 'minilm' does not take these arguments")
