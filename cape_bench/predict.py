"""`cape-bench predict`: one query image, one prompt, keypoints drawn and printed as JSON.

The query is cropped exactly as in evaluation (the box made square, padded by
1.25, warped to the input size) and predictions are mapped back with the exact
inverse. The prompt is what the method consumes (`support_kinds`): keypoint
descriptions (`--keypoints`) and a class name (`--class`) for text methods, a
support image with its keypoints (`--support-image`, `--support-keypoints`) for
image / keypoint methods. Stdout carries only the JSON; notes go to stderr.
"""
from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import cv2
import numpy as np
import torch

from cape_bench.data.crops import read_rgb
from cape_bench.errors import ConfigError, DatasetError

_EDGE = re.compile(r"^\s*(\d+)\s*-\s*(\d+)\s*$")


def parse_keypoint_names(value: str) -> list[str]:
    """'left eye, right eye' -> ['left eye', 'right eye']; empty names are errors."""
    names = [name.strip() for name in value.split(",")]
    empty = [i for i, name in enumerate(names) if not name]
    if empty:
        raise ConfigError(f"--keypoints {value!r}: keypoint {empty[0]} is empty; give comma-separated names like \"left eye,right eye,nose\"")
    return names


def parse_skeleton(value: str | None, num_keypoints: int) -> list[tuple[int, int]]:
    """'0-1,1-2' -> [(0, 1), (1, 2)]; 0-based indices below `num_keypoints`."""
    if not value:
        return []
    edges = []
    for item in value.split(","):
        match = _EDGE.match(item)
        if not match:
            raise ConfigError(f"--skeleton {value!r}: cannot parse {item.strip()!r}; expected 0-based index pairs like 0-1,1-2")
        a, b = int(match.group(1)), int(match.group(2))
        for index in (a, b):
            if index >= num_keypoints:
                raise ConfigError(f"--skeleton edge {a}-{b}: index {index} out of range for {num_keypoints} keypoints (0-based, 0..{num_keypoints - 1})")
        edges.append((a, b))
    return edges


def parse_bbox(value: str | None, image_size: tuple[int, int], flag: str) -> np.ndarray:
    """'x,y,w,h' (pixels) -> the sanitised box; default the whole image."""
    from cape_bench.data.records import sanitize_bbox

    width, height = image_size
    if not value:
        return np.array([0.0, 0.0, width - 1.0, height - 1.0])
    try:
        numbers = [float(v) for v in value.split(",")]
    except ValueError:
        numbers = []
    if len(numbers) != 4 or numbers[2] <= 0 or numbers[3] <= 0:
        raise ConfigError(f"{flag} {value!r}: expected x,y,w,h in pixels with w, h > 0")
    box = sanitize_bbox(numbers, width, height)
    if box is None:
        raise ConfigError(f"{flag} {value!r}: the box lies outside the {width}x{height} image")
    return box


def load_support_keypoints(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """JSON list of [x, y] or [x, y, v] (pixels) -> (keypoints [K, 2], visible [K])."""
    if not path.is_file():
        raise DatasetError(f"{path}: support keypoint file not found")
    try:
        raw = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise DatasetError(f"{path}: not valid JSON ({error})") from None
    if not isinstance(raw, list) or not raw:
        raise DatasetError(f"{path}: expected a non-empty JSON list of [x, y] or [x, y, v]")
    points, visible = [], []
    for i, item in enumerate(raw):
        if not isinstance(item, list) or len(item) not in (2, 3) or not all(isinstance(v, (int, float)) for v in item):
            raise DatasetError(f"{path}: keypoint {i} is {item!r}; expected [x, y] or [x, y, v] numbers")
        points.append(item[:2])
        visible.append(len(item) == 2 or item[2] > 0)
    return np.asarray(points, dtype=np.float64), np.asarray(visible, dtype=bool)


def _instance(path: Path, image: np.ndarray, bbox: np.ndarray, keypoints: np.ndarray, visible: np.ndarray):
    from cape_bench.data.records import Instance

    height, width = image.shape[:2]
    return Instance(0, 0, 0, 0, str(path), (width, height), bbox, keypoints, visible)


def predict_keypoints(method, *, image: Path, bbox: str | None = None, names: list[str] | None = None, skeleton: list[tuple[int, int]] | None = None,
                      class_name: str | None = None, support_image: Path | None = None, support_keypoints: tuple[np.ndarray, np.ndarray] | None = None,
                      support_bbox: str | None = None, device: str | torch.device = "cpu") -> dict:
    """Run `method` on one query; returns {"keypoints": [K, 2] image pixels, "bbox": [...], "names": [...], "skeleton": [...]}.

    Raises:
        ConfigError: the prompt lacks what the method consumes, or keypoint counts disagree.
        DatasetError: an image or keypoint file cannot be read.
    """
    from cape_bench.data.crops import crop_instance
    from cape_bench.data.transforms import apply_affine, invert_affine
    from cape_bench.method import (
        MAX_KEYPOINTS,
        CapeBatch,
        PairBatch,
        QueryBatch,
        SupportBatch,
    )

    kinds = method.support_kinds
    if "text" in kinds and not names:
        raise ConfigError(f"this method reads keypoint descriptions: pass --keypoints \"left eye,right eye,...\" (it consumes {', '.join(sorted(kinds))})")
    if "class" in kinds and not class_name:
        raise ConfigError("this method reads a class name: pass --class NAME (e.g. --class \"horse body\")")
    if ("image" in kinds or "keypoints" in kinds) and support_keypoints is None:
        raise ConfigError(f"this method reads a support pose: pass --support-keypoints FILE{' and --support-image S' if 'image' in kinds else ''} (it consumes {', '.join(sorted(kinds))})")
    if "image" in kinds and support_image is None:
        raise ConfigError("this method reads a support image: pass --support-image S with --support-keypoints FILE")
    if support_keypoints is not None and support_image is None and "keypoints" in kinds:
        # Keypoint-only methods normalise the support pose by its box: without an image, the query box stands in.
        support_image = image
    k = len(names) if names else len(support_keypoints[0])
    if names and support_keypoints is not None and len(support_keypoints[0]) != len(names):
        raise ConfigError(f"--keypoints names {len(names)} keypoints but --support-keypoints holds {len(support_keypoints[0])}")
    names = names or [f"keypoint {i}" for i in range(k)]
    skeleton = skeleton or []

    device = torch.device(device)
    size = method.input_size
    query_pixels = read_rgb(image)
    query = _instance(image, query_pixels, parse_bbox(bbox, (query_pixels.shape[1], query_pixels.shape[0]), "--bbox"), np.zeros((k, 2)), np.ones(k, dtype=bool))
    query_crop = crop_instance(query, image, size)
    slots = k if method.pads_keypoints_dynamically else MAX_KEYPOINTS
    support_points = torch.zeros(1, 1, slots, 2)
    support_visible = torch.zeros(1, 1, slots, dtype=torch.bool)
    support_visible[0, 0, :k] = True
    support_images = None
    if support_keypoints is not None:
        points, visible = support_keypoints
        support_pixels = read_rgb(support_image)
        support = _instance(support_image, support_pixels, parse_bbox(support_bbox, (support_pixels.shape[1], support_pixels.shape[0]), "--support-bbox"), points, visible)
        support_crop = crop_instance(support, support_image if "image" in kinds else None, size)
        support_points[0, 0, :k] = torch.from_numpy(support_crop.keypoints)
        support_visible[0, 0, :k] = torch.from_numpy(visible)
        if "image" in kinds:
            support_images = support_crop.image[None, None].to(device)
    batch = CapeBatch(
        QueryBatch(query_crop.image[None].to(device) if method.uses_query_image else None, [0]),
        SupportBatch(support_images, support_points.to(device), support_visible.to(device), [names], [skeleton], [0]),
        PairBatch(support_visible[:, 0].to(device), [skeleton], [class_name or ""]),
    )
    method = method.eval().to(device)
    with torch.inference_mode():
        output = method.predict(batch)
    normalised = output[0, :k].float().cpu().numpy().astype(np.float64)
    pixels = apply_affine(normalised * size, invert_affine(query_crop.matrix))
    return {"keypoints": pixels, "bbox": query.bbox, "names": names, "skeleton": skeleton, "visible": support_visible[0, 0, :k].cpu().numpy()}


def draw_keypoints(image: np.ndarray, keypoints: np.ndarray, skeleton, bbox=None, visible=None) -> np.ndarray:
    """BGR image with the box, skeleton and numbered keypoints drawn (colours cycle per keypoint)."""
    canvas = cv2.cvtColor(image, cv2.COLOR_RGB2BGR).copy()
    scale = max(canvas.shape[:2])
    radius, thickness = max(2, round(scale / 150)), max(1, round(scale / 300))
    visible = np.ones(len(keypoints), dtype=bool) if visible is None else visible
    if bbox is not None:
        x, y, w, h = (round(v) for v in bbox)
        cv2.rectangle(canvas, (x, y), (x + w, y + h), (200, 200, 200), thickness)
    points = [(round(x), round(y)) for x, y in keypoints]
    for a, b in skeleton:
        if visible[a] and visible[b]:
            cv2.line(canvas, points[a], points[b], (0, 200, 255), thickness, cv2.LINE_AA)
    from matplotlib import colormaps

    palette = (np.asarray(colormaps["tab20"].colors) * 255)[:, ::-1].astype(int)
    for i, point in enumerate(points):
        if not visible[i]:
            continue
        colour = tuple(int(c) for c in palette[i % len(palette)])
        cv2.circle(canvas, point, radius, colour, -1, cv2.LINE_AA)
        cv2.circle(canvas, point, radius, (255, 255, 255), 1, cv2.LINE_AA)
        cv2.putText(canvas, str(i), (point[0] + radius + 1, point[1] - radius), cv2.FONT_HERSHEY_SIMPLEX, max(0.3, scale / 1200), colour, 1, cv2.LINE_AA)
    return canvas


def predict_command(args) -> int:
    """The `cape-bench predict` handler: build, predict, draw, print JSON."""
    from cape_bench.build import build_method, default_config, parse_overrides
    from cape_bench.profiling import resolve_device
    from cape_bench.registry import METHODS

    device = resolve_device(args.device)
    names = parse_keypoint_names(args.keypoints) if args.keypoints else None
    support_keypoints = load_support_keypoints(args.support_keypoints) if args.support_keypoints else None
    count = len(names) if names else (len(support_keypoints[0]) if support_keypoints is not None else None)
    if count is None:
        raise ConfigError("give the prompt: --keypoints \"a,b,...\" (text methods) or --support-image S --support-keypoints FILE (image methods)")
    skeleton = parse_skeleton(args.skeleton, count)
    read_rgb(args.image)  # a bad query image fails before the model is built
    if args.support_image is not None:
        read_rgb(args.support_image)
    canonical = METHODS.canonical(args.method)
    method, resolved = build_method(canonical, args.config or default_config(canonical, demo=False), parse_overrides(args.cfg_options))
    if args.checkpoint is not None:
        from cape_bench.checkpoints import load_checkpoint

        load_checkpoint(method, args.checkpoint)
    result = predict_keypoints(
        method, image=args.image, bbox=args.bbox, names=names, skeleton=skeleton, class_name=args.class_name,
        support_image=args.support_image, support_keypoints=support_keypoints, support_bbox=args.support_bbox, device=device,
    )
    if args.checkpoint is None and method.trainable:
        print(f"cape-bench: note: no --checkpoint: {canonical} ({resolved['config_name']}) ran with untrained head weights; the keypoints are not meaningful", file=sys.stderr)
    out = args.out or Path(f"{args.image.stem}.{canonical}.png")
    canvas = draw_keypoints(read_rgb(args.image), result["keypoints"], result["skeleton"], result["bbox"], result["visible"])
    out.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(out), canvas):
        raise ConfigError(f"--out {out}: cannot write the image (unknown extension or folder not writable)")
    payload = {
        "method": canonical, "config": resolved["config_name"], "checkpoint": str(args.checkpoint) if args.checkpoint else None,
        "image": str(args.image), "bbox": [round(float(v), 2) for v in result["bbox"]], "output": str(out),
        "keypoints": [
            {"index": i, "name": name, "x": round(float(x), 2), "y": round(float(y), 2)}
            for i, (name, (x, y)) in enumerate(zip(result["names"], result["keypoints"]))
        ],
        "skeleton": [list(edge) for edge in result["skeleton"]],
    }
    print(json.dumps(payload, indent=1))
    return 0
