import math

import cv2
import numpy as np
import pytest

from cape_bench.data.crops import crop_instance
from cape_bench.data.records import load_annotation_set
from cape_bench.data.transforms import (
    apply_affine,
    bbox_to_center_scale,
    crop_matrix,
    invert_affine,
    normalize_image,
)


def _three_point_reference(center, scale, rotation_deg, size):
    """mmpose's construction: three point pairs solved by OpenCV."""
    src_w = scale[0] * 200
    rad = math.radians(rotation_deg)
    sn, cs = math.sin(rad), math.cos(rad)
    src_dir = np.array([0 * cs - (-0.5 * src_w) * sn, 0 * sn + (-0.5 * src_w) * cs])
    third = lambda a, b: b + np.array([-(a - b)[1], (a - b)[0]])  # noqa: E731
    src = np.zeros((3, 2), np.float32)
    dst = np.zeros((3, 2), np.float32)
    src[0], dst[0] = center, [size * 0.5, size * 0.5]
    src[1], dst[1] = center + src_dir, dst[0] + [0, -0.5 * size]
    src[2], dst[2] = third(src[0], src[1]), third(dst[0], dst[1])
    return cv2.getAffineTransform(src, dst)


@pytest.mark.parametrize("rotation", [0.0, 23.0, -30.0])
def test_closed_form_matches_three_point_construction(rotation):
    center, scale = np.array([140.2, 77.9]), np.array([1.7, 1.7])
    np.testing.assert_allclose(crop_matrix(center, scale, 256, rotation), _three_point_reference(center, scale, rotation, 256), atol=1e-4)


def test_center_scale_square_and_padded():
    center, scale = bbox_to_center_scale([10, 20, 100, 50])
    np.testing.assert_allclose(center, [60, 45])
    np.testing.assert_allclose(scale, [100 / 200 * 1.25] * 2)


def test_box_maps_to_the_middle_of_the_crop():
    bbox = [10, 20, 100, 50]
    matrix = crop_matrix(*bbox_to_center_scale(bbox), 256)
    # The longer side (100 px) spans 256 / 1.25 = 204.8 crop pixels.
    corners = apply_affine(np.array([[10, 45], [110, 45]]), matrix)
    np.testing.assert_allclose(corners, [[25.6, 128], [230.4, 128]])


@pytest.mark.parametrize("rotation", [0.0, 17.0])
def test_round_trip_points(rotation):
    rng = np.random.default_rng(0)
    points = rng.uniform(0, 300, size=(50, 2))
    matrix = crop_matrix(np.array([120.0, 99.0]), np.array([1.1, 1.1]), 256, rotation)
    back = apply_affine(apply_affine(points, matrix), invert_affine(matrix))
    np.testing.assert_allclose(back, points, atol=1e-9)


def test_inverse_equals_mmpose_transform_preds():
    center, scale = np.array([64.5, 80.25]), np.array([0.9, 0.9])
    crop_points = np.array([[0.0, 0.0], [128.0, 128.0], [255.0, 17.0]])
    scale_px = scale * 200
    expected = crop_points * scale_px / 256 + center - scale_px / 2
    np.testing.assert_allclose(apply_affine(crop_points, invert_affine(crop_matrix(center, scale, 256))), expected, atol=1e-9)


def test_crop_instance_keypoints_and_image(quirky_root):
    annotations = load_annotation_set(quirky_root / "annotations" / "mp100_split1_test.json")
    instance = annotations.instances[0]
    crop = crop_instance(instance, quirky_root / "images" / instance.file_name, 256)
    assert crop.image.shape == (3, 256, 256)
    back = apply_affine(crop.keypoints * 256.0, invert_affine(crop.matrix))
    np.testing.assert_allclose(back[instance.visible], instance.keypoints[instance.visible], atol=1e-3)


def test_normalize_image_uses_imagenet_statistics():
    pixel = np.full((1, 1, 3), 255, dtype=np.uint8)
    np.testing.assert_allclose(normalize_image(pixel)[:, 0, 0], (1 - np.array([0.485, 0.456, 0.406])) / np.array([0.229, 0.224, 0.225]), rtol=1e-6)
