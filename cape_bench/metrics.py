"""Per-pair keypoint metrics of the MP-100 1-shot protocol (PCK, NME, AUC, EPE).

The CAPE test datasets call mmpose v0.29's ``top_down_eval`` functions once per
(support, query) pair and then average the per-pair numbers, so every function
here returns one value per pair and aggregation is a plain mean over pairs.

Coordinates are in ORIGINAL image pixels. ``mask`` marks the keypoints visible
in the query AND in the support, and ``normalizer`` is max(w, h) of the query's
sanitised (tight) bbox.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

DEFAULT_THRESHOLDS: tuple[float, ...] = (0.05, 0.10, 0.15, 0.20, 0.25)
"""``pck_threshold_list`` of the CAPE ``TestPoseDataset``."""

# mmpose ``keypoint_auc(num_step=20)`` evaluates PCK at i / 20 for i in 0..19.
AUC_THRESHOLDS: tuple[float, ...] = tuple(i / 20 for i in range(20))

# Metrics that can be NaN for a pair with no evaluated keypoint; every other
# metric is defined (0) there and must stay in the mean.
_NAN_SKIPPING_METRICS = ("NME", "EPE")


def normalized_errors(pred, gt, mask, normalizer) -> np.ndarray:
    """Keypoint errors divided by the query's bbox size.

    Args:
        pred: Predicted keypoints, shape [N, K, 2], original image pixels.
        gt: Ground-truth keypoints, shape [N, K, 2], original image pixels.
        mask: Evaluated keypoints (visible in query and support), shape [N, K].
        normalizer: max(w, h) of each query's sanitised bbox, shape [N].

    Returns:
        Float array [N, K]: ``||pred - gt|| / normalizer``, NaN where ``mask``
        is False.

    Raises:
        ValueError: On mismatched shapes or a non-positive normalizer.
    """
    pred, gt, mask = _validated_keypoints(pred, gt, mask)
    normalizer = _validated_normalizer(normalizer, len(pred))
    return _normalized_errors(pred, gt, mask, normalizer)


def pck(pred, gt, mask, normalizer, thresholds=DEFAULT_THRESHOLDS) -> np.ndarray:
    """Per-pair PCK at each threshold.

    A keypoint is correct iff its normalised error is strictly below the
    threshold. A pair with no evaluated keypoint scores 0.

    Args:
        pred: Predicted keypoints, shape [N, K, 2], original image pixels.
        gt: Ground-truth keypoints, shape [N, K, 2], original image pixels.
        mask: Evaluated keypoints (visible in query and support), shape [N, K].
        normalizer: max(w, h) of each query's sanitised bbox, shape [N].
        thresholds: PCK thresholds, as fractions of ``normalizer``.

    Returns:
        Float array [N, T]: correct / evaluated keypoints per pair and threshold.

    Raises:
        ValueError: On mismatched shapes, a non-positive normalizer or an empty
            threshold list.

    Example:
        >>> import numpy as np
        >>> gt = np.zeros((1, 3, 2))
        >>> pred = np.array([[[3.0, 4.0], [0.0, 12.0], [30.0, 40.0]]])  # 5, 12, 50 px
        >>> mask = np.ones((1, 3), dtype=bool)
        >>> pck(pred, gt, mask, normalizer=np.array([100.0]), thresholds=(0.1, 0.2))
        array([[0.33333333, 0.66666667]])
    """
    pred, gt, mask = _validated_keypoints(pred, gt, mask)
    normalizer = _validated_normalizer(normalizer, len(pred))
    errors = _normalized_errors(pred, gt, mask, normalizer)
    return _pck_from_errors(errors, mask, _validated_thresholds(thresholds))


def auc(pred, gt, mask, normalizer) -> np.ndarray:
    """Per-pair area under the PCK curve, PCK averaged over ``AUC_THRESHOLDS``.

    Args:
        pred: Predicted keypoints, shape [N, K, 2], original image pixels.
        gt: Ground-truth keypoints, shape [N, K, 2], original image pixels.
        mask: Evaluated keypoints (visible in query and support), shape [N, K].
        normalizer: max(w, h) of each query's sanitised bbox, shape [N].

    Returns:
        Float array [N]; 0 for a pair with no evaluated keypoint, as for PCK.

    Raises:
        ValueError: On mismatched shapes or a non-positive normalizer.
    """
    pred, gt, mask = _validated_keypoints(pred, gt, mask)
    normalizer = _validated_normalizer(normalizer, len(pred))
    errors = _normalized_errors(pred, gt, mask, normalizer)
    return _auc_from_errors(errors, mask)


def nme(pred, gt, mask, normalizer) -> np.ndarray:
    """Per-pair mean normalised error over the evaluated keypoints.

    Args:
        pred: Predicted keypoints, shape [N, K, 2], original image pixels.
        gt: Ground-truth keypoints, shape [N, K, 2], original image pixels.
        mask: Evaluated keypoints (visible in query and support), shape [N, K].
        normalizer: max(w, h) of each query's sanitised bbox, shape [N].

    Returns:
        Float array [N]; NaN for a pair with no evaluated keypoint.

    Raises:
        ValueError: On mismatched shapes or a non-positive normalizer.
    """
    pred, gt, mask = _validated_keypoints(pred, gt, mask)
    normalizer = _validated_normalizer(normalizer, len(pred))
    return _masked_mean(_normalized_errors(pred, gt, mask, normalizer), mask)


def epe(pred, gt, mask) -> np.ndarray:
    """Per-pair mean end-point error in original image pixels.

    Args:
        pred: Predicted keypoints, shape [N, K, 2], original image pixels.
        gt: Ground-truth keypoints, shape [N, K, 2], original image pixels.
        mask: Evaluated keypoints (visible in query and support), shape [N, K].

    Returns:
        Float array [N]; NaN for a pair with no evaluated keypoint.

    Raises:
        ValueError: On mismatched shapes.
    """
    pred, gt, mask = _validated_keypoints(pred, gt, mask)
    return _masked_mean(np.linalg.norm(pred - gt, axis=-1), mask)


def pair_metrics(
    pred, gt, mask, normalizer, thresholds=DEFAULT_THRESHOLDS
) -> dict[str, np.ndarray]:
    """Every per-pair metric of the evaluator, one array of length N each.

    Args:
        pred: Predicted keypoints, shape [N, K, 2], original image pixels.
        gt: Ground-truth keypoints, shape [N, K, 2], original image pixels.
        mask: Evaluated keypoints (visible in query and support), shape [N, K].
        normalizer: max(w, h) of each query's sanitised bbox, shape [N].
        thresholds: PCK thresholds, as fractions of ``normalizer``.

    Returns:
        ``{"PCK@0.05": ..., ..., "mPCK", "NME", "AUC", "EPE", "num_evaluated"}``
        where ``mPCK`` is the mean of the PCK columns and ``num_evaluated`` is
        the integer count of evaluated keypoints.

    Raises:
        ValueError: On mismatched shapes, a non-positive normalizer or an empty
            threshold list.
    """
    pred, gt, mask = _validated_keypoints(pred, gt, mask)
    normalizer = _validated_normalizer(normalizer, len(pred))
    thresholds = _validated_thresholds(thresholds)
    errors = _normalized_errors(pred, gt, mask, normalizer)
    pck_table = _pck_from_errors(errors, mask, thresholds)

    metrics = {f"PCK@{thr:g}": pck_table[:, j] for j, thr in enumerate(thresholds)}
    metrics["mPCK"] = pck_table.mean(axis=1)
    metrics["NME"] = _masked_mean(errors, mask)
    metrics["AUC"] = _auc_from_errors(errors, mask)
    metrics["EPE"] = _masked_mean(np.linalg.norm(pred - gt, axis=-1), mask)
    metrics["num_evaluated"] = mask.sum(axis=1)
    return metrics


def summarize(
    table: pd.DataFrame, by: str | None = None, metrics: Sequence[str] | None = None
) -> pd.DataFrame:
    """Mean of each metric over pairs, for the whole table or per group.

    Split-level numbers are the unweighted mean of the per-pair values (the
    MP-100 evaluator averages PCK_pair over all pairs), not a pooled
    per-keypoint ratio, so a category with many keypoints does not weigh more.

    Args:
        table: One row per pair, with metric columns as from ``pair_metrics``.
        by: Optional column to group by, e.g. ``"category_id"`` or
            ``"supercategory"``. Groups keep the order of their first row.
        metrics: Columns to average; default: the ``PCK@*``, ``mPCK``, ``NME``,
            ``AUC`` and ``EPE`` columns present in ``table``.

    Returns:
        One row per group (index named ``by``), or a single row indexed
        ``"all"``; one column per metric plus ``pairs``, the number of pairs.
        NME and EPE skip NaN pairs (no evaluated keypoint).

    Raises:
        ValueError: If a column is missing, no metric column is found, or a
            column other than NME/EPE holds NaN.
    """
    if metrics is None:
        metrics = [
            column
            for column in table.columns
            if str(column).startswith("PCK@") or column in ("mPCK", "NME", "AUC", "EPE")
        ]
        if not metrics:
            raise ValueError(
                f"summarize found no metric column in {list(table.columns)}; "
                "pass a table built from pair_metrics() or name them with metrics="
            )
    metrics = list(metrics)
    missing = [c for c in metrics + ([by] if by is not None else []) if c not in table]
    if missing:
        raise ValueError(
            f"summarize: columns {missing} are not in the table "
            f"(it has {list(table.columns)})"
        )
    # An empty pair scores PCK/AUC 0 and still counts in the mean; a NaN there
    # would be skipped silently and inflate the score.
    undefined = [
        c for c in metrics if c not in _NAN_SKIPPING_METRICS and table[c].isna().any()
    ]
    if undefined:
        raise ValueError(
            f"summarize: columns {undefined} contain NaN; only NME and EPE may be "
            "NaN (pairs with no evaluated keypoint), PCK/AUC must be 0 there"
        )

    if by is None:
        summary = table[metrics].mean().to_frame("all").T
        summary["pairs"] = len(table)
        return summary
    grouped = table.groupby(by, sort=False)
    summary = grouped[metrics].mean()
    summary["pairs"] = grouped.size()
    return summary


def bootstrap_ci(
    values: np.ndarray,
    groups: np.ndarray,
    n_resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap interval of the pair mean, resampling whole groups.

    Pairs of one episode share a support and are not independent, so the
    episodes (groups) are resampled with replacement and the statistic is the
    mean over all pairs of the drawn groups.

    Args:
        values: Per-pair metric values, shape [P]; drop NaN pairs first.
        groups: Group (episode) label of each pair, shape [P].
        n_resamples: Number of bootstrap resamples.
        confidence: Coverage of the interval, in (0, 1).
        seed: Seed of the ``numpy.random.default_rng`` generator.

    Returns:
        ``(low, high)`` percentile bounds of the resampled means.

    Raises:
        ValueError: On mismatched or empty inputs, NaN values, or an invalid
            ``n_resamples`` / ``confidence``.
    """
    values = np.asarray(values, dtype=np.float64)
    groups = np.asarray(groups)
    if values.ndim != 1 or values.shape != groups.shape:
        raise ValueError(
            "bootstrap_ci: values and groups must be 1-D of equal length, got "
            f"shapes {values.shape} and {groups.shape}"
        )
    if values.size == 0:
        raise ValueError("bootstrap_ci: values is empty")
    if np.isnan(values).any():
        raise ValueError(
            "bootstrap_ci: values contain NaN; drop the pairs with no evaluated "
            "keypoint (NaN NME/EPE) together with their group labels first"
        )
    if n_resamples < 1:
        raise ValueError(f"bootstrap_ci: n_resamples must be >= 1, got {n_resamples}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(
            f"bootstrap_ci: confidence must be in (0, 1), got {confidence}"
        )

    _, group_index = np.unique(groups, return_inverse=True)
    group_sums = np.bincount(group_index, weights=values)
    group_counts = np.bincount(group_index).astype(np.float64)
    draws = np.random.default_rng(seed).integers(
        0, len(group_sums), size=(n_resamples, len(group_sums))
    )
    means = group_sums[draws].sum(axis=1) / group_counts[draws].sum(axis=1)
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(means, [tail, 1.0 - tail])
    return float(low), float(high)


def _validated_keypoints(pred, gt, mask) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    pred = np.asarray(pred, dtype=np.float64)
    gt = np.asarray(gt, dtype=np.float64)
    mask = np.asarray(mask).astype(bool)
    if pred.ndim != 3 or pred.shape[-1] != 2:
        raise ValueError(f"pred must have shape [N, K, 2], got {pred.shape}")
    if gt.shape != pred.shape:
        raise ValueError(f"gt must have the shape of pred {pred.shape}, got {gt.shape}")
    if mask.shape != pred.shape[:2]:
        raise ValueError(
            f"mask must have shape [N, K] = {pred.shape[:2]}, got {mask.shape}"
        )
    return pred, gt, mask


def _validated_normalizer(normalizer, num_pairs: int) -> np.ndarray:
    normalizer = np.asarray(normalizer, dtype=np.float64)
    if normalizer.shape != (num_pairs,):
        raise ValueError(
            f"normalizer must have shape [N] = ({num_pairs},), got {normalizer.shape}"
        )
    # A sanitised MP-100 box always has x2 > x1 and y2 > y1, so a non-positive
    # size means the caller passed the wrong box (mmpose would silently drop it).
    valid = np.isfinite(normalizer) & (normalizer > 0)
    if not valid.all():
        raise ValueError(
            "normalizer must be finite and > 0 (max(w, h) of the query's sanitised "
            f"bbox); bad values at pairs {np.flatnonzero(~valid).tolist()}"
        )
    return normalizer


def _validated_thresholds(thresholds) -> np.ndarray:
    thresholds = np.asarray(thresholds, dtype=np.float64)
    if thresholds.ndim != 1 or thresholds.size == 0:
        raise ValueError(
            f"thresholds must be a non-empty 1-D sequence, got {thresholds.tolist()}"
        )
    return thresholds


def _normalized_errors(pred, gt, mask, normalizer) -> np.ndarray:
    # Divide before taking the norm, in the order of mmpose's _calc_distances.
    errors = np.linalg.norm((pred - gt) / normalizer[:, None, None], axis=-1)
    return np.where(mask, errors, np.nan)


def _pck_from_errors(errors, mask, thresholds) -> np.ndarray:
    # mmpose's _calc_distances stores distances as float32 before the strict
    # `<` test; rounding the same way keeps ties at a threshold identical.
    correct = errors.astype(np.float32)[:, :, None] < thresholds  # NaN -> False
    evaluated = mask.sum(axis=1)[:, None]
    # mmpose returns 0 (not NaN) for a pair with no evaluated keypoint.
    return np.divide(
        correct.sum(axis=1),
        evaluated,
        out=np.zeros((len(errors), len(thresholds))),
        where=evaluated > 0,
    )


def _auc_from_errors(errors, mask) -> np.ndarray:
    return _pck_from_errors(errors, mask, np.asarray(AUC_THRESHOLDS)).mean(axis=1)


def _masked_mean(values, mask) -> np.ndarray:
    evaluated = mask.sum(axis=1)
    return np.divide(
        np.where(mask, values, 0.0).sum(axis=1),
        evaluated,
        out=np.full(len(values), np.nan),
        where=evaluated > 0,
    )
