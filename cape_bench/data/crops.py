"""Instances -> top-down crops (image tensor, normalised keypoints, crop matrix).

One function does the test-time crop of an instance; a torch `Dataset` wraps
it so the runner can decode and warp images in worker processes.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from cape_bench.data.records import Instance
from cape_bench.data.transforms import apply_affine, bbox_to_center_scale, crop_matrix, normalize_image, warp_image
from cape_bench.errors import DatasetError


@dataclass
class Crop:
    """One instance cropped for the network.

    image: [3, S, S] float32 ImageNet-normalised, or None when not requested.
    keypoints: [K, 2] in crop coordinates normalised by S; visible: [K] bool.
    matrix: 2x3 image -> crop-pixel affine map.
    """

    index: int
    image: torch.Tensor | None
    keypoints: np.ndarray
    visible: np.ndarray
    matrix: np.ndarray


def read_rgb(path: Path, instance: Instance | None = None) -> np.ndarray:
    """Decode an image as 8-bit RGB, or raise naming the file (and the annotation, when given)."""
    record = "" if instance is None else f" (annotation {instance.annotation_id}, image {instance.image_id})"
    if not path.is_file():
        raise DatasetError(f"{path}: image file not found{record}")
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise DatasetError(f"{path}: cannot read the image (not an image file, or a format OpenCV cannot decode){record}")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def instance_crop_matrix(instance: Instance, input_size: int, rotation_deg: float = 0.0, scale_factor: float = 1.0) -> np.ndarray:
    center, scale = bbox_to_center_scale(instance.bbox)
    return crop_matrix(center, scale * scale_factor, input_size, rotation_deg)


def crop_instance(instance: Instance, image_path: Path | None, input_size: int, rotation_deg: float = 0.0, scale_factor: float = 1.0) -> Crop:
    """The upstream test crop (training passes a random rotation and scale factor)."""
    matrix = instance_crop_matrix(instance, input_size, rotation_deg, scale_factor)
    keypoints = apply_affine(instance.keypoints, matrix) / input_size
    image = None
    if image_path is not None:
        pixels = warp_image(read_rgb(image_path, instance), matrix, input_size)
        image = torch.from_numpy(normalize_image(pixels))
    return Crop(instance.index, image, keypoints.astype(np.float32), instance.visible.copy(), matrix)


class CropDataset(Dataset):
    """Crops of a list of instance indices, for a DataLoader with workers."""

    def __init__(self, instances: list[Instance], indices: list[int], image_root: Path | None, input_size: int) -> None:
        self.instances = instances
        self.indices = indices
        self.image_root = image_root
        self.input_size = input_size

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, position: int) -> Crop:
        instance = self.instances[self.indices[position]]
        path = None if self.image_root is None else self.image_root / instance.file_name
        return crop_instance(instance, path, self.input_size)


def keep_crops(batch: list[Crop]) -> list[Crop]:
    """DataLoader collate that leaves the crops as they are (stacking happens later)."""
    return batch
