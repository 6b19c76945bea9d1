"""Tests of the shared CAPE head (`cape_bench.nn`) against the upstream facts in UPSTREAM_ARCH §2-§8."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from cape_bench.nn.graph_decoder import GCNLayer, inverse_sigmoid
from cape_bench.nn.head import CapeHead, HeadOutput
from cape_bench.nn.heatmaps import keypoint_heatmaps
from cape_bench.nn.losses import keypoint_l1_loss, keypoint_normalizer
from cape_bench.nn.positional import sine_grid_encoding, sine_point_encoding
from cape_bench.nn.proposal import ProposalGenerator
from cape_bench.nn.skeleton import adjacency_from_skeleton
from cape_bench.nn.support import pool_support_keypoints

FIXTURE = Path(__file__).parent / "fixtures" / "keypoint_head_keys.json"

FULL_SIZE = {
    "graphcape": dict(support_proj_name="query_proj", support_dim=768),
    "capex": dict(support_proj_name="text_proj", support_dim=768),
    "capenext": dict(support_proj_name="text_proj", support_dim=512),
}
TINY = dict(
    in_channels=32,
    support_dim=24,
    d_model=64,
    nhead=4,
    num_encoder_layers=2,
    num_decoder_layers=2,
    dim_feedforward=96,
    similarity_proj_dim=64,
    dynamic_proj_dim=32,
)
FEAT = 8  # tiny feature map side


def tiny_head(seed: int = 0, randomise: bool = False, **overrides) -> CapeHead:
    torch.manual_seed(seed)
    head = CapeHead(**{**TINY, **overrides})
    if randomise:
        # Upstream init zeroes the last kpt_branch Linear; re-draw everything so every path matters.
        with torch.no_grad():
            for name, param in head.named_parameters():
                param.copy_(torch.randn_like(param) * 0.1)
                if "norm" in name and name.endswith("weight"):
                    param += 1.0
    return head


def chain(num: int) -> list[tuple[int, int]]:
    return [(i, i + 1) for i in range(num - 1)]


# ----------------------------------------------------------------------------- state dict parity


@pytest.mark.parametrize("model", sorted(FULL_SIZE))
def test_state_dict_keys_and_params_match_upstream(model: str) -> None:
    reference = json.loads(FIXTURE.read_text())["heads"][model]
    head = CapeHead(**FULL_SIZE[model])
    shapes = {k: list(v.shape) for k, v in head.state_dict().items()}
    assert shapes == reference["keys"]
    assert list(shapes) == list(reference["keys"])  # same registration order too
    assert sum(p.numel() for p in head.parameters()) == reference["num_params"]


def test_plain_ffn_variant_has_linear_ffn1_and_needs_no_skeleton() -> None:
    head = tiny_head(graph_ffn=False).eval()
    keys = head.state_dict().keys()
    assert "transformer.decoder.layers.0.ffn1.weight" in keys
    assert not any("ffn1.conv" in k for k in keys)
    out = head(torch.randn(2, 32, FEAT, FEAT), torch.randn(2, 5, 24), torch.ones(2, 5, dtype=torch.bool))
    assert torch.isfinite(out.layer_outputs).all()


def test_unknown_support_proj_name_is_rejected() -> None:
    with pytest.raises(ValueError, match="support_proj_name"):
        CapeHead(**{**TINY, "support_proj_name": "support_proj"})


# ----------------------------------------------------------------------------- forward


def test_forward_shapes() -> None:
    head = tiny_head().eval()
    batch, num_kpt = 3, 11
    mask = torch.zeros(batch, num_kpt, dtype=torch.bool)
    mask[0, :4] = True
    mask[1, :11] = True
    mask[2, :7] = True
    with torch.no_grad():
        out = head(torch.randn(batch, 32, FEAT, FEAT), torch.randn(batch, num_kpt, 24), mask, [chain(4), chain(11), []])
    assert isinstance(out, HeadOutput)
    assert out.similarity_map.shape == (batch, num_kpt, FEAT, FEAT)
    assert out.proposals_for_loss.shape == (batch, num_kpt, 2)
    assert out.proposals.shape == (batch, num_kpt, 2)
    assert out.layer_outputs.shape == (2, batch, num_kpt, 2)
    assert out.keypoints.shape == (batch, num_kpt, 2)
    assert ((out.layer_outputs >= 0) & (out.layer_outputs <= 1)).all()


def test_random_init_outputs_equal_clamped_proposals() -> None:
    head = tiny_head().eval()
    mask = torch.ones(2, 6, dtype=torch.bool)
    with torch.no_grad():
        out = head(torch.randn(2, 32, FEAT, FEAT), torch.randn(2, 6, 24), mask, [chain(6), chain(3)])
    expected = out.proposals.clamp(1e-3, 1 - 1e-3)
    for layer in out.layer_outputs:
        torch.testing.assert_close(layer, expected, atol=1e-6, rtol=0)


def test_results_do_not_depend_on_padding_slots() -> None:
    head = tiny_head(seed=1, randomise=True).eval()
    torch.manual_seed(2)
    features = torch.randn(2, 32, FEAT, FEAT)
    valid = 7
    padded = 20
    embeddings = torch.randn(2, padded, 24)  # padded slots hold garbage on purpose
    skeletons = [chain(valid), [(0, 3), (3, 6), (1, 2)]]
    outputs = {}
    for num_slots in (valid, padded):
        mask = torch.zeros(2, num_slots, dtype=torch.bool)
        mask[:, :valid] = True
        with torch.no_grad():
            outputs[num_slots] = head(features, embeddings[:, :num_slots], mask, skeletons)
    short, long = outputs[valid], outputs[padded]
    for field in ("proposals_for_loss", "proposals", "similarity_map"):
        diff = (getattr(short, field) - getattr(long, field)[:, :valid]).abs().max()
        assert diff < 1e-5 * max(1.0, getattr(short, field).abs().max().item()), field
    assert (short.layer_outputs - long.layer_outputs[:, :, :valid]).abs().max() < 1e-5


def test_batch_results_equal_per_sample_results() -> None:
    head = tiny_head(seed=3, randomise=True).eval()
    torch.manual_seed(4)
    batch, num_kpt = 3, 9
    features = torch.randn(batch, 32, FEAT, FEAT)
    embeddings = torch.randn(batch, num_kpt, 24)
    mask = torch.zeros(batch, num_kpt, dtype=torch.bool)
    mask[0, :9] = True
    mask[1, [0, 2, 3, 5]] = True  # invalid slots between valid ones
    # sample 2 has no valid keypoint: slot 0 is unmasked internally to avoid NaN
    skeletons = [chain(9), [(0, 2), (2, 3), (3, 5), (5, 8)], [(0, 1)]]
    with torch.no_grad():
        together = head(features, embeddings, mask, skeletons)
        alone = [
            head(features[i : i + 1], embeddings[i : i + 1], mask[i : i + 1], skeletons[i : i + 1])
            for i in range(batch)
        ]
    assert torch.isfinite(together.layer_outputs).all()
    for i in range(batch):
        torch.testing.assert_close(together.layer_outputs[:, i], alone[i].layer_outputs[:, 0], atol=1e-5, rtol=0)
        torch.testing.assert_close(together.proposals[i], alone[i].proposals[0], atol=1e-5, rtol=0)
        torch.testing.assert_close(together.similarity_map[i], alone[i].similarity_map[0], atol=1e-4, rtol=1e-5)


def test_support_embeddings_of_masked_slots_are_ignored() -> None:
    head = tiny_head(seed=5, randomise=True).eval()
    torch.manual_seed(6)
    features, embeddings = torch.randn(1, 32, FEAT, FEAT), torch.randn(1, 6, 24)
    mask = torch.tensor([[True, True, False, True, True, False]])
    changed = embeddings.clone()
    changed[0, [2, 5]] = 100.0
    with torch.no_grad():
        a = head(features, embeddings, mask, [chain(6)])
        b = head(features, changed, mask, [chain(6)])
    torch.testing.assert_close(a.layer_outputs, b.layer_outputs)


# ----------------------------------------------------------------------------- skeleton / GCN


def test_adjacency_hand_case() -> None:
    mask = torch.tensor([[True, True, True, False]])
    adjacency = adjacency_from_skeleton([[(0, 1), (1, 0), (1, 2), (2, 3)]], mask)
    assert adjacency.shape == (1, 2, 4, 4)
    torch.testing.assert_close(adjacency[0, 0], torch.diag(torch.tensor([1.0, 1.0, 1.0, 0.0])))
    expected = torch.tensor(
        [
            [0.0, 1.0, 0.0, 0.0],
            [0.5, 0.0, 0.5, 0.0],
            [0.0, 1.0, 0.0, 0.0],
            [0.0, 0.0, 0.0, 0.0],  # masked node: row and column zeroed, 0/0 -> 0
        ]
    )
    torch.testing.assert_close(adjacency[0, 1], expected)


def test_gcn_contracts_over_the_first_node_index() -> None:
    # Node w receives sum_v A[v, w] x_v (the transpose of the row-normalised mean) plus its self loop.
    gcn = GCNLayer(1, 1)
    with torch.no_grad():
        gcn.conv.weight.fill_(1.0)
        gcn.conv.bias.zero_()
    adjacency = adjacency_from_skeleton([[(0, 1), (1, 2), (2, 3)]], torch.tensor([[True, True, True, False]]))
    x = torch.tensor([1.0, 2.0, 3.0, 4.0]).view(1, 4, 1)
    out = gcn(x, adjacency).view(4)
    # neighbours: w0 <- A[1,0]*x1 = 1; w1 <- A[0,1]*x0 + A[2,1]*x2 = 1 + 3; w2 <- A[1,2]*x1 = 1; w3 masked.
    torch.testing.assert_close(out, torch.tensor([1.0 + 1.0, 2.0 + 4.0, 3.0 + 1.0, 0.0]))


def test_adjacency_rejects_out_of_range_edges() -> None:
    with pytest.raises(ValueError, match="outside"):
        adjacency_from_skeleton([[(0, 5)]], torch.ones(1, 3, dtype=torch.bool))


# ----------------------------------------------------------------------------- heatmaps


def msra_reference(keypoints: np.ndarray, visible: np.ndarray, image: int, size: int, sigma: float):
    """Direct per-joint transcription of the MSRA rule, for comparison."""
    num = len(keypoints)
    target = np.zeros((num, size, size), np.float32)
    weight = np.zeros(num, np.float32)
    tmp = sigma * 3
    stride = image / size
    for j in range(num):
        weight[j] = visible[j]
        mu_x = int(keypoints[j, 0] / stride + 0.5)
        mu_y = int(keypoints[j, 1] / stride + 0.5)
        ul = [int(mu_x - tmp), int(mu_y - tmp)]
        br = [int(mu_x + tmp + 1), int(mu_y + tmp + 1)]
        if ul[0] >= size or ul[1] >= size or br[0] < 0 or br[1] < 0:
            weight[j] = 0
        if weight[j] > 0.5:
            for py in range(max(0, ul[1]), min(br[1], size)):
                for px in range(max(0, ul[0]), min(br[0], size)):
                    gx, gy = px - ul[0] - (2 * tmp + 1) // 2, py - ul[1] - (2 * tmp + 1) // 2
                    target[j, py, px] = np.exp(-(gx * gx + gy * gy) / (2 * sigma**2))
    return target, weight


def test_heatmaps_match_msra_rule() -> None:
    points = np.array(
        [
            [100.3, 50.9],  # interior
            [1.0, 254.0],  # window clipped by the border
            [-3.0, 30.0],  # small negative x: int() truncates toward zero, peak still on cell 0
            [-18.0, 30.0],  # br_x == 0: weight stays 1 but nothing is drawn (upstream's `br < 0`)
            [400.0, 30.0],  # entirely outside: weight 0
            [128.0, 128.0],  # invisible
        ],
        np.float32,
    )
    visible = np.array([1, 1, 1, 1, 1, 0], np.float32)
    heatmaps, weight = keypoint_heatmaps(torch.from_numpy(points)[None], torch.from_numpy(visible)[None])
    assert heatmaps.shape == (1, 6, 64, 64) and weight.shape == (1, 6)
    ref_maps, ref_weight = msra_reference(points, visible, 256, 64, 1.0)
    np.testing.assert_allclose(heatmaps[0].numpy(), ref_maps, atol=1e-6)
    np.testing.assert_allclose(weight[0].numpy(), ref_weight)
    # hand values: peak at (int(100.3/4+.5), int(50.9/4+.5)) = (25, 13), neighbour exp(-1/2)
    assert heatmaps[0, 0, 13, 25] == 1.0
    assert math.isclose(heatmaps[0, 0, 13, 26].item(), math.exp(-0.5), rel_tol=1e-6)
    assert heatmaps[0, 2, 8, 0] == 1.0
    assert weight[0].tolist() == [1.0, 1.0, 1.0, 1.0, 0.0, 0.0]
    assert heatmaps[0, 3].sum() == 0 and heatmaps[0, 4].sum() == 0 and heatmaps[0, 5].sum() == 0


# ----------------------------------------------------------------------------- losses


def test_losses_are_finite_and_backpropagate() -> None:
    head = tiny_head(seed=7).train()
    torch.manual_seed(8)
    batch, num_kpt = 2, 6
    mask = torch.tensor([[1, 1, 1, 1, 0, 0], [0, 0, 0, 0, 0, 0]], dtype=torch.bool)  # sample 1: no valid keypoint
    out = head(torch.randn(batch, 32, FEAT, FEAT), torch.randn(batch, num_kpt, 24), mask, [chain(4), []])
    target = torch.rand(batch, num_kpt, 2)
    heatmaps, weight = keypoint_heatmaps(target * 256, torch.ones(batch, num_kpt))
    losses = head.loss(out, target, weight, heatmaps)
    assert set(losses) == {"heatmap_loss", "proposal_loss", "l1_loss_layer0", "l1_loss_layer1"}
    total = sum(losses.values())
    assert all(torch.isfinite(v) and v.dim() == 0 for v in losses.values())
    total.backward()
    grads = [p.grad for p in head.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    assert head.kpt_branch[0].mlp[6].weight.grad.abs().sum() > 0
    assert head.transformer.proposal_generator.support_proj.weight.grad.abs().sum() > 0


def test_l1_loss_normalisation_hand_case() -> None:
    prediction = torch.tensor([[[0.1, 0.2], [0.5, 0.5], [0.9, 0.9]], [[0.0, 0.0], [0.0, 0.0], [0.0, 0.0]]])
    target = torch.tensor([[[0.2, 0.2], [0.5, 0.7], [0.0, 0.0]], [[1.0, 1.0], [1.0, 1.0], [1.0, 1.0]]])
    weight = torch.tensor([[1.0, 1.0, 0.0], [0.0, 0.0, 0.0]])
    normalizer = keypoint_normalizer(weight)
    assert normalizer.tolist() == [2.0, 1.0]
    # sample 0: (0.1 + 0.2) / 2 = 0.15; sample 1: 0 (nothing valid); mean over B=2 -> 0.075
    assert math.isclose(keypoint_l1_loss(prediction, target, weight, normalizer).item(), 0.075, rel_tol=1e-5)


# ----------------------------------------------------------------------------- positional encoding


def test_grid_encoding_cell_zero_hand_values() -> None:
    pos = sine_grid_encoding(16, 16, num_feats=128)
    assert pos.shape == (256, 16, 16)
    v = 1 / (16 + 1e-6) * 2 * math.pi
    for ch in (0, 1, 2, 3, 126, 127):
        freq = 10000 ** (2 * (ch // 2) / 128)
        expected = math.sin(v / freq) if ch % 2 == 0 else math.cos(v / freq)
        assert math.isclose(pos[ch, 0, 0].item(), expected, abs_tol=1e-6)  # y half
        assert math.isclose(pos[128 + ch, 0, 0].item(), expected, abs_tol=1e-6)  # x half
    # row r, col c: y channels vary with r only, x channels with c only
    torch.testing.assert_close(pos[:128, 3, 0], pos[:128, 3, 9])
    torch.testing.assert_close(pos[128:, 0, 5], pos[128:, 11, 5])


def test_point_encoding_hand_values_and_half_cell_offset() -> None:
    pos = sine_point_encoding(torch.tensor([[[0.25, 0.75]]]), num_feats=128)[0, 0]
    assert pos.shape == (256,)
    assert math.isclose(pos[0].item(), math.sin(0.75 * 2 * math.pi), abs_tol=1e-6)  # y first
    assert math.isclose(pos[1].item(), math.cos(0.75 * 2 * math.pi), abs_tol=1e-6)
    assert math.isclose(pos[128].item(), math.sin(0.25 * 2 * math.pi), abs_tol=1e-6)
    assert math.isclose(pos[129].item(), math.cos(0.25 * 2 * math.pi), abs_tol=1e-6)
    freq = 10000 ** (2 / 128)
    assert math.isclose(pos[130].item(), math.sin(0.25 * 2 * math.pi / freq), abs_tol=1e-6)
    # The grid encodes cell c at (c+1)/16, a point at the cell centre is at (c+0.5)/16.
    grid = sine_grid_encoding(16, 16, num_feats=128)
    c, r = 4, 9
    at_corner = sine_point_encoding(torch.tensor([(c + 1) / 16, (r + 1) / 16]), num_feats=128)
    at_centre = sine_point_encoding(torch.tensor([(c + 0.5) / 16, (r + 0.5) / 16]), num_feats=128)
    torch.testing.assert_close(at_corner, grid[:, r, c], atol=1e-5, rtol=0)
    assert (at_centre - grid[:, r, c]).abs().max() > 0.1


# ----------------------------------------------------------------------------- proposals


def test_proposals_local_vs_full_soft_argmax() -> None:
    generator = ProposalGenerator(d_model=2, proj_dim=2, dynamic_proj_dim=2)
    with torch.no_grad():
        for linear in (generator.support_proj, generator.query_proj):
            linear.weight.copy_(torch.eye(2))
            linear.bias.zero_()
        generator.dynamic_proj[2].weight.zero_()  # tanh(0) = 0: plain dot product
        generator.dynamic_proj[2].bias.zero_()
    h, w = 4, 6
    image = torch.zeros(1, h * w, 2)
    image[0, 1 * w + 1, 0] = 5.0  # peak at row 1, col 1
    image[0, 3 * w + 5, 0] = 4.9  # a near-equal peak far away at row 3, col 5
    keypoint = torch.tensor([[[1.0, 0.0]]])
    full, similarity, local = generator(image, keypoint, h, w)
    assert similarity.shape == (1, 1, h, w) and similarity[0, 0, 1, 1] == 5.0
    # local: only the 3x3 around (1, 1) counts; the peak dominates it
    probs = torch.tensor([math.exp(5.0)] + [1.0] * 8)
    xs = torch.tensor([1.5] + [0.5, 1.5, 2.5, 0.5, 2.5, 0.5, 1.5, 2.5])
    ys = torch.tensor([1.5] + [0.5, 0.5, 0.5, 1.5, 1.5, 2.5, 2.5, 2.5])
    expected_local = torch.stack(((probs * xs).sum() / probs.sum() / w, (probs * ys).sum() / probs.sum() / h))
    torch.testing.assert_close(local[0, 0], expected_local, atol=1e-6, rtol=0)
    # full: pulled towards the far peak
    assert full[0, 0, 0] > 0.5 and full[0, 0, 1] > 0.5


# ----------------------------------------------------------------------------- support pooling


def test_pool_support_keypoints() -> None:
    torch.manual_seed(9)
    features = torch.randn(2, 5, 4, 4)
    heatmaps = torch.zeros(2, 3, 16, 16)
    heatmaps[:, 0] = 1.0  # uniform: mean of the resized map
    heatmaps[:, 1, 6, 9] = 3.0  # one pixel: the resized feature there
    pooled = pool_support_keypoints(features, heatmaps)
    assert pooled.shape == (2, 3, 5)
    resized = nn.functional.interpolate(features, size=(16, 16), mode="bilinear", align_corners=False)
    torch.testing.assert_close(pooled[:, 0], resized.mean(dim=(-2, -1)), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(pooled[:, 1], resized[:, :, 6, 9], atol=1e-5, rtol=1e-5)
    assert pooled[:, 2].abs().max() == 0  # empty heatmap -> zero vector


def test_inverse_sigmoid_clamps() -> None:
    x = torch.tensor([-0.5, 0.0, 0.0005, 0.5, 1.0, 2.0])
    expected = torch.tensor(
        [math.log(1e-3), math.log(1e-3), math.log(1e-3 / 0.9995), 0.0, math.log(1 / 1e-3), math.log(1 / 1e-3)]
    )
    torch.testing.assert_close(inverse_sigmoid(x), expected)
