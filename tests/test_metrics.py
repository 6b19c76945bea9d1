import doctest
import math

import numpy as np
import pandas as pd
import pytest

from cape_bench import metrics
from cape_bench.metrics import (
    AUC_THRESHOLDS,
    DEFAULT_THRESHOLDS,
    auc,
    bootstrap_ci,
    epe,
    nme,
    normalized_errors,
    pair_metrics,
    pck,
    summarize,
)


def one_pair(offsets, normalizer=100.0, mask=None):
    """A single pair with gt at the origin and pred displaced by ``offsets`` px."""
    pred = np.asarray(offsets, dtype=np.float64)[None]
    gt = np.zeros_like(pred)
    if mask is None:
        mask = [True] * pred.shape[1]
    return pred, gt, np.asarray(mask, dtype=bool)[None], np.array([normalizer])


def reference_pair_metrics(pred, gt, mask, normalizer, thresholds):
    """Loop-by-loop transcription of the per-pair protocol (PROTOCOLS.md 2.4)."""
    rows = []
    for p, g, m, n in zip(pred, gt, mask, normalizer):
        errors = [
            math.hypot(*(p[k] - g[k])) / n for k in range(len(m)) if m[k]
        ]
        pixels = [math.hypot(*(p[k] - g[k])) for k in range(len(m)) if m[k]]

        def pck_at(thr, errors=errors):
            return sum(e < thr for e in errors) / len(errors) if errors else 0.0

        rows.append(
            {
                "pck": [pck_at(t) for t in thresholds],
                "auc": sum(pck_at(i / 20) for i in range(20)) / 20,
                "nme": sum(errors) / len(errors) if errors else math.nan,
                "epe": sum(pixels) / len(pixels) if pixels else math.nan,
            }
        )
    return rows


# --- hand-computed fixtures -------------------------------------------------


def test_three_keypoint_pair_by_hand():
    # 3-4-5, 0-12-12 and 30-40-50 triangles: distances 5, 12 and 50 px.
    pred, gt, mask, norm = one_pair([[3, 4], [0, 12], [30, 40]], normalizer=100.0)

    errors = normalized_errors(pred, gt, mask, norm)
    np.testing.assert_allclose(errors, [[0.05, 0.12, 0.5]])
    # 0.05 is not < 0.05; 0.05 < 0.10; 0.12 < 0.15; 0.5 never within 0.25.
    expected_pck = [[0, 1 / 3, 2 / 3, 2 / 3, 2 / 3]]
    np.testing.assert_allclose(pck(pred, gt, mask, norm), expected_pck)
    np.testing.assert_allclose(nme(pred, gt, mask, norm), [(0.05 + 0.12 + 0.5) / 3])
    np.testing.assert_allclose(epe(pred, gt, mask), [(5 + 12 + 50) / 3])


@pytest.mark.parametrize(
    ("thr", "pixels"), zip(DEFAULT_THRESHOLDS, (5.0, 10.0, 15.0, 20.0, 25.0))
)
def test_error_exactly_at_threshold_is_not_correct(thr, pixels):
    pred, gt, mask, norm = one_pair([[pixels, 0.0]], normalizer=100.0)
    assert normalized_errors(pred, gt, mask, norm)[0, 0] == thr
    assert pck(pred, gt, mask, norm, thresholds=[thr])[0, 0] == 0.0

    just_below = one_pair([[pixels - 1e-3, 0.0]], normalizer=100.0)
    assert pck(*just_below, thresholds=[thr])[0, 0] == 1.0


def test_threshold_ties_are_decided_in_float32_like_mmpose():
    # mmpose stores distances as float32: 0.2 - 1e-12 rounds up past 0.2.
    tie = one_pair([[0.2 - 1e-12, 0.0]], normalizer=1.0)
    assert pck(*tie, thresholds=[0.2])[0, 0] == 0.0
    clear = one_pair([[0.2 - 1e-6, 0.0]], normalizer=1.0)
    assert pck(*clear, thresholds=[0.2])[0, 0] == 1.0


def test_mask_excludes_keypoints():
    offsets = [[3, 4], [500, 500], [0, 12]]
    pred, gt, mask, norm = one_pair(offsets, mask=[True, False, True])

    errors = normalized_errors(pred, gt, mask, norm)
    assert np.isnan(errors[0, 1])
    np.testing.assert_allclose(errors[0, [0, 2]], [0.05, 0.12])
    pck_table = pck(pred, gt, mask, norm, thresholds=[0.1, 0.2])
    np.testing.assert_allclose(pck_table, [[0.5, 1.0]])
    np.testing.assert_allclose(nme(pred, gt, mask, norm), [(0.05 + 0.12) / 2])
    np.testing.assert_allclose(epe(pred, gt, mask), [(5 + 12) / 2])
    assert pair_metrics(pred, gt, mask, norm)["num_evaluated"].tolist() == [2]


def test_normalizer_scaling():
    pred, gt, mask, norm = one_pair([[3, 4], [0, 12], [30, 40]], normalizer=100.0)
    scale = 3.0
    scaled = (pred * scale, gt * scale, mask, norm * scale)

    base, big = pair_metrics(pred, gt, mask, norm), pair_metrics(*scaled)
    for key in ("mPCK", "AUC", "NME"):
        np.testing.assert_allclose(big[key], base[key])
    np.testing.assert_allclose(big["EPE"], base["EPE"] * scale)
    # A box half as large doubles every normalised error.
    np.testing.assert_allclose(nme(pred, gt, mask, norm / 2), 2 * base["NME"])


def test_auc_by_hand():
    assert AUC_THRESHOLDS == tuple(i / 20 for i in range(20))
    # Error 0.12 is below 0.15, ..., 0.95 (17 of 20); error 0.5 below 0.55, ...,
    # 0.95 (9 of 20); a perfect keypoint fails only at threshold 0 (strict <).
    pred, gt, mask, norm = one_pair([[12, 0], [50, 0], [0, 0]], normalizer=100.0)
    np.testing.assert_allclose(auc(pred, gt, mask, norm), [(17 + 9 + 19) / 60])


def test_pair_without_evaluated_keypoint():
    pred = np.array([[[0.0, 0.0]], [[7.0, 7.0]]])
    gt = np.zeros_like(pred)
    mask = np.array([[True], [False]])
    norm = np.array([50.0, 50.0])

    result = pair_metrics(pred, gt, mask, norm)
    assert result["PCK@0.2"].tolist() == [1.0, 0.0]
    assert result["AUC"][1] == 0.0
    assert np.isnan(result["NME"][1]) and np.isnan(result["EPE"][1])
    assert result["num_evaluated"].tolist() == [1, 0]

    # The empty pair's 0 is averaged in (mmpose), NME/EPE skip its NaN.
    summary = summarize(pd.DataFrame(result))
    assert summary.loc["all", "PCK@0.2"] == 0.5
    assert summary.loc["all", "NME"] == 0.0
    assert summary.loc["all", "pairs"] == 2


def test_pair_metrics_keys_and_mpck():
    rng = np.random.default_rng(0)
    pred = rng.uniform(0, 100, (4, 6, 2))
    gt = rng.uniform(0, 100, (4, 6, 2))
    mask = rng.random((4, 6)) < 0.8
    result = pair_metrics(pred, gt, mask, np.full(4, 200.0))

    assert list(result) == [
        "PCK@0.05", "PCK@0.1", "PCK@0.15", "PCK@0.2", "PCK@0.25",
        "mPCK", "NME", "AUC", "EPE", "num_evaluated",
    ]  # fmt: skip
    pcks = np.stack([result[f"PCK@{t:g}"] for t in DEFAULT_THRESHOLDS], axis=1)
    np.testing.assert_allclose(result["mPCK"], pcks.mean(axis=1))
    assert all(len(v) == 4 for v in result.values())
    assert result["num_evaluated"].dtype.kind == "i"


def test_matches_loop_reference_on_random_pairs():
    rng = np.random.default_rng(1)
    n, k = 40, 17
    gt = rng.uniform(0, 400, (n, k, 2))
    pred = gt + rng.normal(0, 30, (n, k, 2))
    mask = rng.random((n, k)) < 0.7
    mask[3] = False  # one empty pair
    norm = rng.uniform(50, 300, n)

    result = pair_metrics(pred, gt, mask, norm)
    reference = reference_pair_metrics(pred, gt, mask, norm, DEFAULT_THRESHOLDS)
    np.testing.assert_allclose(pck(pred, gt, mask, norm), [r["pck"] for r in reference])
    np.testing.assert_allclose(result["AUC"], [r["auc"] for r in reference])
    np.testing.assert_allclose(result["NME"], [r["nme"] for r in reference])
    np.testing.assert_allclose(result["EPE"], [r["epe"] for r in reference])


def test_pck_docstring_example():
    result = doctest.testmod(metrics)
    assert result.attempted > 0 and result.failed == 0


# --- aggregation ------------------------------------------------------------


def per_pair_table():
    # Category 7, pair 0: 1 evaluated keypoint, correct.
    # Category 7, pair 1: 4 evaluated keypoints, 1 correct.
    # Category 3, pair 2: 2 evaluated keypoints, none correct.
    pred = np.array(
        [
            [[1, 0], [0, 0], [0, 0], [0, 0]],
            [[1, 0], [90, 0], [90, 0], [90, 0]],
            [[90, 0], [90, 0], [0, 0], [0, 0]],
        ],
        dtype=np.float64,
    )
    mask = np.array(
        [
            [True, False, False, False],
            [True, True, True, True],
            [True, True, False, False],
        ]
    )
    result = pair_metrics(pred, np.zeros_like(pred), mask, np.full(3, 100.0))
    table = pd.DataFrame(result)
    table["category_id"] = [7, 7, 3]
    return table


def test_summarize_is_mean_over_pairs_not_pooled():
    summary = summarize(per_pair_table())
    # Per pair: (1 + 1/4 + 0) / 3. A pooled ratio would give 2 / 7.
    assert summary.loc["all", "PCK@0.2"] == pytest.approx((1 + 0.25 + 0) / 3)
    assert summary.loc["all", "PCK@0.2"] != pytest.approx(2 / 7)
    assert summary.loc["all", "pairs"] == 3
    assert "num_evaluated" not in summary


def test_summarize_by_category():
    summary = summarize(per_pair_table(), by="category_id")
    # Groups keep the order of their first pair (the JSON category order).
    assert summary.index.tolist() == [7, 3]
    assert summary.index.name == "category_id"
    assert summary.loc[7, "PCK@0.2"] == pytest.approx((1 + 0.25) / 2)
    assert summary.loc[3, "PCK@0.2"] == 0.0
    assert summary["pairs"].tolist() == [2, 1]


def test_summarize_selected_metrics_and_errors():
    table = per_pair_table()
    summary = summarize(table, metrics=["EPE"])
    assert list(summary.columns) == ["EPE", "pairs"]

    with pytest.raises(ValueError, match="not in the table"):
        summarize(table, by="supercategory")
    with pytest.raises(ValueError, match="no metric column"):
        summarize(table[["category_id"]])
    table.loc[0, "PCK@0.2"] = np.nan
    with pytest.raises(ValueError, match="contain NaN"):
        summarize(table)


# --- bootstrap --------------------------------------------------------------


def episode_values(seed=0, episodes=30, pairs_per_episode=15):
    rng = np.random.default_rng(seed)
    groups = np.repeat(np.arange(episodes), pairs_per_episode)
    values = rng.random(episodes)[groups] * 0.5 + rng.random(groups.size) * 0.5
    return values, groups


def test_bootstrap_is_deterministic_and_contains_mean():
    values, groups = episode_values()
    low, high = bootstrap_ci(values, groups, seed=3)
    assert (low, high) == bootstrap_ci(values, groups, seed=3)
    assert (low, high) != bootstrap_ci(values, groups, seed=4)
    assert low < values.mean() < high
    assert isinstance(low, float) and isinstance(high, float)


def test_bootstrap_statistic_pools_pairs_of_drawn_groups():
    # Groups of unequal size: the statistic is the mean over all drawn pairs.
    values = np.array([0.0, 1.0, 1.0, 1.0, 0.5])
    groups = np.array(["a", "b", "b", "b", "c"])
    n_resamples, seed = 200, 5
    draws = np.random.default_rng(seed).integers(0, 3, size=(n_resamples, 3))
    members = [values[groups == g] for g in ("a", "b", "c")]
    means = [np.concatenate([members[i] for i in row]).mean() for row in draws]

    expected = tuple(np.quantile(means, [0.05, 0.95]))
    got = bootstrap_ci(
        values, groups, n_resamples=n_resamples, confidence=0.9, seed=seed
    )
    np.testing.assert_allclose(got, expected)


def test_bootstrap_single_group_is_degenerate():
    low, high = bootstrap_ci(np.array([0.2, 0.4]), np.array([0, 0]))
    assert low == pytest.approx(0.3) and high == pytest.approx(0.3)


# --- validation -------------------------------------------------------------


@pytest.mark.parametrize(
    ("pred_shape", "gt_shape", "mask_shape", "norm_shape", "message"),
    [
        ((2, 3, 3), (2, 3, 3), (2, 3), (2,), "pred must have shape"),
        ((2, 3, 2), (2, 4, 2), (2, 3), (2,), "gt must have the shape"),
        ((2, 3, 2), (2, 3, 2), (2, 4), (2,), "mask must have shape"),
        ((2, 3, 2), (2, 3, 2), (2, 3), (3,), "normalizer must have shape"),
    ],
)
def test_shape_errors(pred_shape, gt_shape, mask_shape, norm_shape, message):
    args = (np.zeros(pred_shape), np.zeros(gt_shape), np.ones(mask_shape, bool))
    with pytest.raises(ValueError, match=message):
        pair_metrics(*args, np.ones(norm_shape))


def test_invalid_normalizer_thresholds_and_bootstrap_inputs():
    pred, gt, mask, _ = one_pair([[1, 0]])
    with pytest.raises(ValueError, match="finite and > 0"):
        pck(pred, gt, mask, np.array([0.0]))
    with pytest.raises(ValueError, match="non-empty"):
        pck(pred, gt, mask, np.array([1.0]), thresholds=[])
    with pytest.raises(ValueError, match="mask must have shape"):
        epe(pred, gt, np.ones((2, 1), bool))
    with pytest.raises(ValueError, match="equal length"):
        bootstrap_ci(np.zeros(3), np.zeros(2))
    with pytest.raises(ValueError, match="NaN"):
        bootstrap_ci(np.array([0.1, np.nan]), np.array([0, 1]))
    with pytest.raises(ValueError, match="confidence"):
        bootstrap_ci(np.zeros(3), np.arange(3), confidence=1.0)
