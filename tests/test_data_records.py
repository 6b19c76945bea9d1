import json

import numpy as np
import pytest

from cape_bench.data.layout import DatasetRoot, resolve_dataset
from cape_bench.data.records import (
    load_annotation_set,
    normalize_skeleton,
    sanitize_bbox,
)
from cape_bench.errors import DatasetError


def _load(root):
    return load_annotation_set(root / "annotations" / "mp100_split1_test.json")


def test_quirks_are_read_as_upstream(quirky_root):
    annotations = _load(quirky_root)
    categories = annotations.categories
    assert list(categories) == [2, 14, 18, 32, 40]  # JSON order is kept
    assert categories[18].name == categories[40].name == "face"
    assert (categories[18].num_keypoints, categories[40].num_keypoints) == (19, 68)  # empty name lists
    assert categories[18].supercategory == categories[40].supercategory == "human_face"
    assert categories[14].class_name == "Woodpecker"
    assert categories[2].class_name == "horse body"
    # 1-based AP-10K skeleton (max index == K) shifted; 0-based vehicle kept.
    assert categories[2].skeleton_index_base == 1 and categories[2].skeleton[-1] == (2, 16)
    assert categories[32].skeleton_index_base == 0 and categories[32].skeleton[0] == (0, 1)


def test_instances_in_database_order_with_filters_counted(quirky_root):
    annotations = _load(quirky_root)
    assert [i.index for i in annotations.instances] == list(range(len(annotations.instances)))
    # Two instances on the first image of every category.
    first = annotations.instances[0]
    assert annotations.instances[1].image_id == first.image_id
    report = annotations.filtered
    assert report.counts == {"degenerate_bbox": 2, "zero_area": 1, "all_keypoints_zero": 1, "no_labelled_keypoints": 1}
    assert "degenerate_bbox" in report.summary()
    assert len(annotations.instances) == 5 * 21
    aflw = [i for i in annotations.instances if i.category_id == 18]
    assert aflw[0].file_name.startswith("amur_tiger_body/flickr/")


def test_visibility_rule_counts_v1(quirky_root):
    raw = json.loads((quirky_root / "annotations" / "mp100_split1_test.json").read_text())
    annotation = raw["annotations"][0]
    v = np.array(annotation["keypoints"]).reshape(-1, 3)[:, 2]
    instance = _load(quirky_root).instances[0]
    np.testing.assert_array_equal(instance.visible, v > 0)
    assert (v == 1).any()


def test_sanitize_bbox_matches_upstream_rule():
    np.testing.assert_allclose(sanitize_bbox([10, 20, 30, 40], 100, 100), [10, 20, 29, 39])
    np.testing.assert_allclose(sanitize_bbox([-5, -5, 30, 40], 100, 100), [0, 0, 29, 39])
    np.testing.assert_allclose(sanitize_bbox([90, 90, 30, 40], 100, 100), [90, 90, 9, 9])
    assert sanitize_bbox([120, 5, 10, 10], 100, 100) is None
    assert sanitize_bbox([5, 5, 1, 10], 100, 100) is None


def test_skeleton_out_of_range_is_an_error():
    assert normalize_skeleton([[0, 1], [1, 4]], 5, "x") == (((0, 1), (1, 4)), 0)
    with pytest.raises(DatasetError, match="out of range"):
        normalize_skeleton([[0, 7]], 5, "file.json: category 3")


def _rewrite(root, mutate):
    path = root / "annotations" / "mp100_split1_test.json"
    data = json.loads(path.read_text())
    mutate(data)
    path.write_text(json.dumps(data))
    return path


@pytest.fixture
def broken_root(tmp_path):
    from tests.mp100_fixture import write_quirky_mp100

    return write_quirky_mp100(tmp_path)


def test_missing_file(tmp_path):
    with pytest.raises(DatasetError, match="annotation file not found"):
        load_annotation_set(tmp_path / "nope.json")


def test_corrupt_json(broken_root):
    path = broken_root / "annotations" / "mp100_split1_test.json"
    path.write_text('{"images": [')
    with pytest.raises(DatasetError, match=r"mp100_split1_test.json: not valid JSON"):
        load_annotation_set(path)


def test_not_coco(broken_root):
    path = broken_root / "annotations" / "mp100_split1_test.json"
    path.write_text('{"images": []}')
    with pytest.raises(DatasetError, match="not a COCO-style"):
        load_annotation_set(path)


def test_unknown_category_names_file_and_record(broken_root):
    path = _rewrite(broken_root, lambda d: d["annotations"][3].update(category_id=999))
    with pytest.raises(DatasetError, match=r"mp100_split1_test.json: annotation 4 .*unknown category id 999"):
        load_annotation_set(path)


def test_wrong_keypoint_length(broken_root):
    path = _rewrite(broken_root, lambda d: d["annotations"][0].update(keypoints=[1.0, 2.0, 2]))
    with pytest.raises(DatasetError, match=r"annotation 1 .*keypoints has 3 values, expected 3 x 17"):
        load_annotation_set(path)


def test_resolve_dataset_rejects_root_without_annotations(tmp_path):
    with pytest.raises(DatasetError, match="no annotations/ folder"):
        resolve_dataset(tmp_path)


def test_image_root_accepts_both_layouts(quirky_root, tmp_path):
    assert DatasetRoot(quirky_root).image_root == quirky_root / "images"
    (tmp_path / "annotations").mkdir()
    assert DatasetRoot(tmp_path).image_root == tmp_path
