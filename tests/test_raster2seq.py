"""Raster2Seq: the sequence layout, cached vs uncached decoding, the deformable option, full size.

The registry-parametrised tests (`test_methods.py`, `test_fast_eval.py`) already run its tiny
config through loss, predict, padding and batch invariance and the fast-vs-naive evaluation.
"""
from __future__ import annotations

import pytest
import torch

from cape_bench.build import build_method
from cape_bench.errors import ConfigError, WeightsMissingError
from cape_bench.methods.raster2seq.embedding import TokenEmbedding
from cape_bench.methods.raster2seq.sequence import (
    compact_order,
    scatter_keypoints,
    sequence_targets,
)
from tests import weights
from tests.test_methods import make_batch, pad_batch

TOLERANCE = dict(atol=1e-5, rtol=0)


@pytest.fixture(scope="module")
def method():
    torch.manual_seed(0)
    built = build_method("raster2seq", "tiny")[0]
    weights.perturb(built)  # off the init, so every sub-block shapes the output
    return built.eval()


def test_cached_and_uncached_decoding_give_the_same_keypoints(method):
    batch = make_batch(method, batch=3, num_kpt=17, shots=1, seed=7)
    with torch.inference_mode():
        method.kv_cache = True
        cached = method.predict(batch)
        method.kv_cache = False
        uncached = method.predict(batch)
    method.kv_cache = True
    torch.testing.assert_close(cached, uncached, **TOLERANCE)


def test_slots_without_a_template_are_left_out_of_the_sequence(method):
    batch = make_batch(method, batch=1, num_kpt=6, shots=1, seed=8)
    batch.support.visible[0, 0] = torch.tensor([True, True, False, True, False, True])
    with torch.inference_mode():
        out = method.predict(batch)
    assert (out[0, [2, 4]] == 0).all()
    assert (out[0, [0, 1, 3, 5]] > 0).all()


def test_sequence_targets_follow_the_token_layout():
    num_bins = 11
    coords = torch.tensor([[[0.0, 0.5], [0.25, 1.0]], [[0.3, 0.3], [0.0, 0.0]]])
    visible = torch.tensor([[True, False], [True, False]])
    lengths = torch.tensor([2, 1])
    targets = sequence_targets(coords, visible, lengths, num_bins)
    coord_class, sep_class, eos_class = num_bins, num_bins + 1, num_bins + 2
    # Item 0: <coord> x1 y1 <sep> <coord> x2 y2 <sep> <eos>; keypoint 2 is not annotated.
    first = targets.classes[0]
    assert first[0, coord_class] == 1 and first[3, sep_class] == 1 and first[4, coord_class] == 1
    assert first[8, eos_class] == 1
    assert first[1, 0] == 1  # x = 0.0 -> bin 0
    assert first[2, 5] == 1  # y = 0.5 -> bin 5 exactly
    torch.testing.assert_close(targets.classes.sum(-1), torch.ones(2, 9))
    torch.testing.assert_close(targets.class_weight[0], torch.tensor([1, 1, 1, 1, 1, 0, 0, 1, 1.0]))
    torch.testing.assert_close(targets.coord_weight[0], torch.tensor([0, 1, 1, 0, 0, 0, 0, 0, 0.0]))
    # Item 1 has one keypoint: <eos> at position 4, padding after it.
    assert targets.classes[1, 4, eos_class] == 1
    torch.testing.assert_close(targets.class_weight[1], torch.tensor([1, 1, 1, 1, 1, 0, 0, 0, 0.0]))
    # x = 0.3 -> 3.0 bins: between bin 3 and 4 with all weight on 3 (two-hot at an integer).
    torch.testing.assert_close(targets.classes[1, 1, 3:5], torch.tensor([1.0, 0.0]))
    torch.testing.assert_close(targets.coords[0, 1], coords[0, 0])


def test_compact_order_and_scatter_round_trip():
    mask = torch.tensor([[False, True, True, False], [True, False, False, False]])
    order, lengths = compact_order(mask)
    assert order[0, :2].tolist() == [1, 2] and order[1, :1].tolist() == [0]
    assert lengths.tolist() == [2, 1]
    values = torch.arange(16.0).view(2, 4, 2)[:, :2]
    out = scatter_keypoints(values, order, lengths, 4)
    torch.testing.assert_close(out[0, 1:3], values[0])
    torch.testing.assert_close(out[1, 0], values[1, 0])
    assert out[0, [0, 3]].eq(0).all() and out[1, 1:].eq(0).all()


def test_bilinear_coordinate_embedding_interpolates_table_rows():
    embedding = TokenEmbedding(d_model=8, num_bins=5)
    table = embedding.coordinate_table.weight
    torch.testing.assert_close(embedding.coordinate(torch.tensor([0.5])), table[2:3])
    torch.testing.assert_close(embedding.coordinate(torch.tensor([1.0])), table[4:5])
    torch.testing.assert_close(embedding.coordinate(torch.tensor([0.125])), 0.5 * (table[0:1] + table[1:2]))


def test_deformable_image_attention():
    torch.manual_seed(0)
    method = build_method("raster2seq", "tiny", overrides={"model.image_attention": "deformable"})[0]
    losses = method.loss(make_batch(method, batch=2, num_kpt=9, shots=2))
    sum(losses.values()).backward()
    assert method.decoder.layers[0].image_attn.offsets.weight.grad.abs().sum() > 0
    weights.perturb(method)
    method.eval()
    batch = make_batch(method, batch=2, num_kpt=8, shots=1, seed=2)
    with torch.inference_mode():
        plain = method.predict(batch)
        padded = method.predict(pad_batch(batch, 13))[:, :8]
    torch.testing.assert_close(padded, plain, **TOLERANCE)


@pytest.mark.parametrize(("overrides", "match"), [
    ({"model.num_layers": 2}, "model has no setting num_layers"),
    ({"model.image_attention": "global"}, "image_attention='global'"),
    ({"loss_weights.bbox": 1.0}, "loss_weights has no entry bbox"),
])
def test_config_errors(overrides, match):
    with pytest.raises(ConfigError, match=match):
        build_method("raster2seq", "tiny", overrides=overrides)


def test_full_size_parameter_count_on_meta():
    # ResNet-50 up to layer3 (8,543,296) + input projection, pose-graph encoder, embeddings,
    # 6 decoder layers and the two heads (11,063,045).
    with torch.device("meta"):
        method = build_method("raster2seq", "raster2seq", overrides={"random_init": True})[0]
    assert sum(p.numel() for p in method.parameters()) == 19_606_341


def test_full_size_without_backbone_weights_names_the_file():
    with pytest.raises(WeightsMissingError, match="resnet50-0676ba61.pth.*backbone_weights"):
        build_method("raster2seq", "raster2seq")
