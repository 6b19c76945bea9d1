"""Top-down crop geometry: bbox -> centre/scale -> affine warp, and the exact inverse.

All crop math lives here so that training, evaluation and decoding agree. It
reproduces the mmpose v0.29 test pipeline the CAPE code bases use
(PROTOCOLS.md 2.3): the box is made square, padded by 1.25, expressed in units
of 200 px ("pixel std"), and warped (bilinear, zero border) to the input size.
"""
from __future__ import annotations

import math

import cv2
import numpy as np

PIXEL_STD = 200.0
BBOX_PADDING = 1.25
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


def bbox_to_center_scale(bbox, aspect_ratio: float = 1.0, padding: float = BBOX_PADDING) -> tuple[np.ndarray, np.ndarray]:
    """Centre (px) and scale (units of 200 px) of the padded box with the input's aspect ratio."""
    x, y, w, h = (float(v) for v in bbox)
    center = np.array([x + w * 0.5, y + h * 0.5], dtype=np.float64)
    if w > aspect_ratio * h:
        h = w / aspect_ratio
    else:
        w = h * aspect_ratio
    scale = np.array([w, h], dtype=np.float64) / PIXEL_STD * padding
    return center, scale


def crop_matrix(center, scale, output_size: int, rotation_deg: float = 0.0) -> np.ndarray:
    """2x3 affine image -> crop matrix (mmpose non-UDP `get_affine_transform`, in closed form).

    mmpose builds the map from three point pairs; the result is the similarity
    that scales by output/(scale_x * 200), rotates by -rotation about the
    centre and moves the centre to the middle of the crop.
    """
    factor = output_size / (float(scale[0]) * PIXEL_STD)
    theta = math.radians(rotation_deg)
    cos, sin = factor * math.cos(theta), factor * math.sin(theta)
    linear = np.array([[cos, sin], [-sin, cos]], dtype=np.float64)
    offset = np.array([output_size * 0.5, output_size * 0.5]) - linear @ np.asarray(center, dtype=np.float64)
    return np.concatenate([linear, offset[:, None]], axis=1)


def invert_affine(matrix: np.ndarray) -> np.ndarray:
    """Inverse of a 2x3 affine matrix."""
    linear_inv = np.linalg.inv(matrix[:, :2])
    return np.concatenate([linear_inv, -linear_inv @ matrix[:, 2:]], axis=1)


def apply_affine(points: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """Map [..., 2] points with a 2x3 (or batched [..., 2, 3]) affine matrix."""
    points = np.asarray(points, dtype=np.float64)
    matrix = np.asarray(matrix, dtype=np.float64)
    return np.einsum("...ij,...kj->...ki", matrix[..., :2], points) + matrix[..., None, :, 2]


def warp_image(image: np.ndarray, matrix: np.ndarray, output_size: int) -> np.ndarray:
    """Bilinear warp with a zero border, as `cv2.warpAffine` in the upstream pipeline."""
    return cv2.warpAffine(image, matrix, (output_size, output_size), flags=cv2.INTER_LINEAR)


def normalize_image(crop_rgb_uint8: np.ndarray) -> np.ndarray:
    """uint8 HWC RGB -> float32 CHW with ImageNet mean/std (ToTensor + NormalizeTensor)."""
    image = crop_rgb_uint8.astype(np.float32) / 255.0
    return np.ascontiguousarray(((image - IMAGENET_MEAN) / IMAGENET_STD).transpose(2, 0, 1))
