"""MP-100 annotation files -> categories and instances, as the upstream test datasets build them.

Instances are annotations, not images, in database order (images in JSON
order, then each image's annotations): episode reproduction depends on it
(PROTOCOLS.md 2.1). Records the protocol drops are counted per reason in a
`FilterReport`, never dropped silently; records that are malformed (wrong
keypoint count, unknown category) raise `DatasetError` naming file and record.
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import json
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cape_bench.data.mp100_table import mp100_category
from cape_bench.errors import DatasetError

SUBSETS = ("train", "val", "test")


@dataclass(frozen=True)
class Category:
    """One object category: keypoint names, 0-based skeleton, paper supercategory."""

    id: int
    name: str
    supercategory: str
    keypoint_names: tuple[str, ...]
    skeleton: tuple[tuple[int, int], ...]
    num_keypoints: int
    skeleton_index_base: int

    @property
    def class_name(self) -> str:
        """The name as CapeNext puts it in a prompt ("horse body", "Woodpecker")."""
        return self.name.replace("_", " ")


@dataclass(frozen=True, eq=False)
class Instance:
    """One annotated object. `bbox` is the sanitised [x, y, w, h] used for crops and PCK."""

    index: int
    annotation_id: int
    image_id: int
    category_id: int
    file_name: str
    image_size: tuple[int, int]
    bbox: np.ndarray
    keypoints: np.ndarray
    visible: np.ndarray

    @property
    def bbox_size(self) -> float:
        """PCK normaliser: the longer side of the sanitised box (PROTOCOLS.md 2.4)."""
        return float(max(self.bbox[2], self.bbox[3]))


@dataclass
class FilterReport:
    """Annotations the protocol filters out, by reason, with a few example ids."""

    counts: Counter = field(default_factory=Counter)
    examples: dict[str, list[int]] = field(default_factory=lambda: defaultdict(list))

    def add(self, reason: str, annotation_id: int) -> None:
        self.counts[reason] += 1
        if len(self.examples[reason]) < 5:
            self.examples[reason].append(annotation_id)

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def summary(self) -> str:
        parts = [f"{reason}: {n} (e.g. annotation {', '.join(map(str, self.examples[reason]))})" for reason, n in sorted(self.counts.items())]
        return "; ".join(parts)

    def as_dict(self) -> dict:
        return {"total": self.total, "by_reason": dict(self.counts), "examples": {k: list(v) for k, v in self.examples.items()}}


@dataclass
class AnnotationSet:
    """One split file, loaded: categories in JSON order, instances in database order."""

    path: Path
    sha256: str
    categories: dict[int, Category]
    instances: list[Instance]
    filtered: FilterReport

    def instances_of(self, category_id: int) -> list[int]:
        """Instance indices of a category in database order (upstream `cat2obj`)."""
        return self._by_category.get(category_id, [])

    def __post_init__(self) -> None:
        by_category: dict[int, list[int]] = defaultdict(list)
        for instance in self.instances:
            by_category[instance.category_id].append(instance.index)
        self._by_category = dict(by_category)


def sanitize_bbox(bbox, width: int, height: int) -> np.ndarray | None:
    """The upstream box clean-up; None when the box is degenerate (PROTOCOLS.md 2.1).

    x1 = max(0, x), y1 = max(0, y), x2 = min(W-1, x1 + max(0, w-1)),
    y2 = min(H-1, y1 + max(0, h-1)); kept only if x2 > x1 and y2 > y1.
    """
    x, y, w, h = (float(v) for v in bbox)
    x1, y1 = max(0.0, x), max(0.0, y)
    x2 = min(width - 1.0, x1 + max(0.0, w - 1.0))
    y2 = min(height - 1.0, y1 + max(0.0, h - 1.0))
    if x2 <= x1 or y2 <= y1:
        return None
    return np.array([x1, y1, x2 - x1, y2 - y1], dtype=np.float64)


def normalize_skeleton(edges, num_keypoints: int, where: str) -> tuple[tuple[tuple[int, int], ...], int]:
    """Return 0-based edges and the detected index base.

    The original MP-100 files mix conventions: AP-10K-style skeletons are
    1-based (COCO, max index == K), vehicles and the Pose-Anything updates are
    0-based. A skeleton is read as 1-based exactly when its smallest index is
    >= 1 and its largest equals K.
    """
    pairs = [(int(a), int(b)) for a, b in edges]
    if not pairs:
        return (), 0
    flat = [i for pair in pairs for i in pair]
    base = 1 if min(flat) >= 1 and max(flat) == num_keypoints else 0
    shifted = tuple((a - base, b - base) for a, b in pairs)
    bad = [pair for pair in shifted if not (0 <= pair[0] < num_keypoints and 0 <= pair[1] < num_keypoints)]
    if bad:
        raise DatasetError(f"{where}: skeleton edge {bad[0]} is out of range for {num_keypoints} keypoints")
    return shifted, base


def _category_from_json(raw: dict, where: str) -> Category:
    try:
        category_id, name = int(raw["id"]), str(raw["name"])
        names = tuple(str(n) for n in raw.get("keypoints") or ())
    except (KeyError, TypeError, ValueError) as error:
        raise DatasetError(f"{where}: category record {raw!r:.80} lacks a valid id/name ({error})") from None
    published = mp100_category(category_id, name)
    # Two MP-100 categories have an EMPTY keypoint-name list (both `face`), so
    # the keypoint count comes from the published table when the names are missing.
    num_keypoints = len(names) or (published.num_keypoints if published else 0)
    if num_keypoints == 0:
        raise DatasetError(f"{where}: category {category_id} ({name}) has no keypoint names and is not an MP-100 category, so its keypoint count is unknown")
    skeleton, base = normalize_skeleton(raw.get("skeleton") or (), num_keypoints, f"{where}: category {category_id} ({name})")
    if published is not None:
        supercategory = published.supercategory
    else:
        supercategory = str(raw.get("supercategory", "unknown"))
    return Category(category_id, name, supercategory, names, skeleton, num_keypoints, base)


def _read_json(path: Path) -> dict:
    if not path.is_file():
        raise DatasetError(f"{path}: annotation file not found")
    try:
        data = json.loads(path.read_bytes())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise DatasetError(f"{path}: not valid JSON ({error})") from None
    for key in ("images", "annotations", "categories"):
        if not isinstance(data, dict) or not isinstance(data.get(key), list):
            raise DatasetError(f"{path}: not a COCO-style annotation file (top-level list {key!r} missing)")
    return data


def load_annotation_set(path: Path) -> AnnotationSet:
    """Load one `mp100_split{k}_{subset}.json` with the upstream instance filters.

    Raises:
        DatasetError: the file is missing or not COCO JSON, or a record is
            malformed (unknown category, keypoint array of the wrong length,
            image record without width/height).
    """
    from pycocotools.coco import COCO

    path = Path(path)
    raw_bytes_hash = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else ""
    data = _read_json(path)
    categories = {}
    for raw in data["categories"]:
        category = _category_from_json(raw, str(path))
        categories[category.id] = category
    coco = COCO()
    coco.dataset = data
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
        try:
            coco.createIndex()
        except (KeyError, TypeError) as error:
            raise DatasetError(f"{path}: COCO index could not be built, a record lacks field {error}") from None

    instances: list[Instance] = []
    report = FilterReport()
    for image_id in coco.getImgIds():
        image = coco.imgs[image_id]
        for annotation in coco.imgToAnns.get(image_id, []):
            instance = _instance_from_annotation(annotation, image, categories, path, len(instances), report)
            if instance is not None:
                instances.append(instance)
    return AnnotationSet(path, raw_bytes_hash, categories, instances, report)


def _instance_from_annotation(annotation: dict, image: dict, categories: dict[int, Category], path: Path, index: int, report: FilterReport) -> Instance | None:
    annotation_id = annotation.get("id")
    where = f"{path}: annotation {annotation_id} (image {image.get('id')}, {image.get('file_name')})"
    category = categories.get(annotation.get("category_id"))
    if category is None:
        raise DatasetError(f"{where}: unknown category id {annotation.get('category_id')!r} (not in the file's categories)")
    try:
        width, height = int(image["width"]), int(image["height"])
        file_name = str(image["file_name"])
    except (KeyError, TypeError, ValueError):
        raise DatasetError(f"{where}: image record lacks file_name/width/height") from None

    raw_keypoints = annotation.get("keypoints") or []
    if "bbox" not in annotation or annotation["bbox"] is None:
        report.add("no_bbox", annotation_id)
        return None
    if not raw_keypoints:
        report.add("no_keypoints", annotation_id)
        return None
    if len(raw_keypoints) != 3 * category.num_keypoints:
        raise DatasetError(
            f"{where}: keypoints has {len(raw_keypoints)} values, expected 3 x {category.num_keypoints} for category {category.id} ({category.name})"
        )
    bbox = sanitize_bbox(annotation["bbox"], width, height)
    if bbox is None:
        report.add("degenerate_bbox", annotation_id)
        return None
    if float(annotation.get("area", 1.0)) <= 0:
        report.add("zero_area", annotation_id)
        return None
    triplets = np.asarray(raw_keypoints, dtype=np.float64).reshape(-1, 3)
    if not np.any(triplets):
        report.add("all_keypoints_zero", annotation_id)
        return None
    if int(annotation.get("num_keypoints", 1)) == 0:
        report.add("no_labelled_keypoints", annotation_id)
        return None
    # v = 1 (labelled, occluded) and v = 2 both count as visible: min(1, v).
    visible = triplets[:, 2] > 0
    return Instance(
        index=index,
        annotation_id=int(annotation_id),
        image_id=int(image["id"]),
        category_id=category.id,
        file_name=file_name,
        image_size=(width, height),
        bbox=bbox,
        keypoints=triplets[:, :2].astype(np.float64),
        visible=visible,
    )
