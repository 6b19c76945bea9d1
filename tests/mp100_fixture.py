"""A tiny MP-100-format dataset with the real file's quirks, written by the tests.

Quirks (PROTOCOLS.md section 1): two categories named `face` with empty
keypoint-name lists (ids 18 and 40), AFLW images under `amur_tiger_body/`
with deep paths, a capitalised bird name, a 1-based AP-10K-style skeleton
next to a 0-based vehicle skeleton, several instances on one image, v = 1
keypoints, and one record of every kind the protocol filters out.
"""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np

# id, name, folder, keypoint names (empty = as the MP-100 faces), skeleton
CATEGORIES = [
    (2, "horse_body", "horse_body", [f"kp_{i}" for i in range(17)], [[1, 2], [2, 3], [3, 17]]),
    (14, "Woodpecker", "woodpecker_body", ["back", "beak", "belly", "breast", "crown", "forehead", "left eye", "left leg", "left wing", "nape", "right eye", "right leg", "right wing", "tail", "throat"], []),
    (18, "face", "amur_tiger_body", [], []),
    (32, "car", "car", [str(i) for i in range(13)], [[0, 1], [1, 2], [7, 9]]),
    (40, "face", "human_face", [], []),
]
NUM_KEYPOINTS = {2: 17, 14: 15, 18: 19, 32: 13, 40: 68}
INSTANCES_PER_CATEGORY = 20
IMAGE_SIZE = (96, 80)  # width, height


def _file_name(category_id: int, folder: str, index: int) -> str:
    if category_id == 18:
        return f"{folder}/flickr/{index % 3}/image{index:05d}.jpg"
    return f"{folder}/{category_id}_{index:04d}.jpg"


def write_quirky_mp100(root: Path, split_test_ids=(2, 14, 18, 32, 40)) -> Path:
    """Write annotations (all 15 files hold the same categories) and images under root/images/."""
    rng = np.random.default_rng(0)
    width, height = IMAGE_SIZE
    images, annotations = [], []
    annotation_id = 1
    for category_id, _name, folder, _names, _skeleton in CATEGORIES:
        k = NUM_KEYPOINTS[category_id]
        for index in range(INSTANCES_PER_CATEGORY):
            image_id = 3600000000000000 + category_id * 1000 + index
            file_name = _file_name(category_id, folder, index)
            path = root / "images" / file_name
            path.parent.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(path), rng.integers(0, 255, size=(height, width, 3), dtype=np.uint8))
            images.append({"id": image_id, "file_name": file_name, "width": width, "height": height})
            # Two instances share the first image of every category.
            for _ in range(2 if index == 0 else 1):
                xy = rng.uniform([10, 10], [80, 70], size=(k, 2))
                v = rng.choice([0, 1, 2], size=k, p=[0.1, 0.2, 0.7])
                v[0] = 2
                keypoints = np.concatenate([xy, v[:, None]], axis=1)
                keypoints[v == 0, :2] = 0
                annotations.append(
                    {
                        "id": annotation_id, "image_id": image_id, "category_id": category_id,
                        "keypoints": keypoints.reshape(-1).round(2).tolist(), "num_keypoints": int((v > 0).sum()),
                        "bbox": [8.0, 6.5, 75.0, 66.0], "area": 4950.0, "iscrowd": 0,
                    }
                )
                annotation_id += 1
    bad_image = images[0]["id"]
    good_keypoints = annotations[0]["keypoints"]
    filtered = [
        {"bbox": [200.0, 200.0, 10.0, 10.0]},  # outside the image -> degenerate after clipping
        {"bbox": [5.0, 5.0, 0.5, 30.0]},  # degenerate width
        {"area": 0.0},
        {"keypoints": [0.0] * len(good_keypoints)},
        {"num_keypoints": 0},
    ]
    for changes in filtered:
        annotations.append({**annotations[0], "id": annotation_id, "image_id": bad_image, **changes})
        annotation_id += 1
    categories = [
        {"id": cid, "name": name, "supercategory": "animal" if cid in (2, 14) else "person", "keypoints": names, "skeleton": skeleton}
        for cid, name, _folder, names, skeleton in CATEGORIES
        if cid in split_test_ids
    ]
    dataset = {"info": {"description": "cape-bench test fixture"}, "images": images, "annotations": annotations, "categories": categories}
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    for split in range(1, 6):
        for subset in ("train", "val", "test"):
            (root / "annotations" / f"mp100_split{split}_{subset}.json").write_text(json.dumps(dataset))
    return root
