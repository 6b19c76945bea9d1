"""Method-FLF and Method-DLF (Li & Liu): CMAA (eq. 1-4), the consistency loss (eq. 5, 9) and the published sizes.

The registry-parametrised tests (tests/test_methods.py, tests/test_fast_eval.py) run both tiny
configs through loss/backward/predict and fast == naive; DLF is built here with the weight-free
`hash` text encoder so each test builds in well under a second.
"""
from __future__ import annotations

import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F
from cape_bench.methods.fusion_dlf.model import consistency_loss

from cape_bench.build import build_method
from cape_bench.checkpoints import load_checkpoint, save_checkpoint
from cape_bench.errors import ConfigError
from cape_bench.method import CapeMethod
from cape_bench.nn.fusion import CrossModalAlignmentAttention
from tests import weights
from tests.test_methods import make_batch

TOLERANCE = dict(atol=1e-5, rtol=0)


def _method(name: str, perturb: bool = True, **overrides) -> CapeMethod:
    torch.manual_seed(0)
    if name == "fusion-dlf":
        overrides = {"text_encoder": "hash", "text_encoder_options": {"dim": 48}, **overrides}
    method = build_method(name, "tiny", overrides=overrides)[0]
    if perturb:
        weights.perturb(method)
    return method.eval()


# Full-size parameter counts (the paper's 195.715 M / 203.742 M) are checked with the other
# published sizes in tests/test_methods.py::FULL_SIZE.


# ----------------------------------------------------------------------------- CMAA


def test_cmaa_is_eq_3_with_one_scalar_and_three_bias_free_projections():
    torch.manual_seed(0)
    module = CrossModalAlignmentAttention(16, gamma_init=0.7)
    assert sum(p.numel() for p in module.parameters()) == 3 * 16 * 16 + 1
    assert module.gamma.numel() == 1 and module.query_proj.bias is None
    x, y = torch.randn(2, 5, 16), torch.randn(2, 4, 16)
    with torch.no_grad():
        q, k, v = x @ module.query_proj.weight.T, y @ module.key_proj.weight.T, y @ module.value_proj.weight.T
        attention = torch.softmax(q @ k.transpose(1, 2) / math.sqrt(16), dim=-1)
        expected = F.layer_norm(x + 0.7 * attention @ v, (16,))
        torch.testing.assert_close(module(x, y), expected, **TOLERANCE)


def test_cmaa_gamma_zero_starts_as_layer_norm_and_masked_keys_are_ignored():
    torch.manual_seed(0)
    module = CrossModalAlignmentAttention(16, gamma_init=0.0)
    x, y = torch.randn(2, 5, 16), torch.randn(2, 6, 16)
    with torch.no_grad():
        torch.testing.assert_close(module(x, y), F.layer_norm(x, (16,)), **TOLERANCE)
        module.gamma.fill_(1.0)
        mask = torch.tensor([[True] * 4 + [False] * 2, [True, False, True, False, False, False]])
        changed = y.clone()
        changed[~mask] = torch.randn(int((~mask).sum()), 16)
        torch.testing.assert_close(module(x, y, mask), module(x, changed, mask), **TOLERANCE)
        torch.testing.assert_close(module(x, y, mask)[0], module(x[:1], y[:1, :4])[0], **TOLERANCE)
        # No valid key at all: no fused term (and no NaN).
        torch.testing.assert_close(module(x, y, torch.zeros(2, 6, dtype=torch.bool)), F.layer_norm(x, (16,)))


@pytest.mark.parametrize("direction", ["text_into_image", "image_into_text"])
def test_flf_projects_both_modalities_with_one_text_proj(direction):
    method = _method("fusion-flf", **{"fusion.direction": direction})
    batch = make_batch(method, batch=2, num_kpt=6, shots=2)
    with torch.inference_mode():
        support = method.encode_support(batch.support)
        mask = support.per_keypoint["mask"]
        assert support.per_keypoint["embeddings"].shape == support.per_keypoint["text_embeddings"].shape
        assert (support.per_keypoint["text_embeddings"][~mask] == 0).all()
        project = lambda e: method.keypoint_head.text_proj(e * mask[..., None])  # noqa: E731
        image, text = project(support.per_keypoint["embeddings"]), project(support.per_keypoint["text_embeddings"])
        residual, context = (image, text) if direction == "text_into_image" else (text, image)
        torch.testing.assert_close(method.fused_tokens(support), method.cmaa(residual, context, mask), **TOLERANCE)
        method.cmaa.gamma.zero_()
        torch.testing.assert_close(method.fused_tokens(support), F.layer_norm(residual, (residual.shape[-1],)), **TOLERANCE)
    assert not hasattr(method.keypoint_head, "query_proj")


def test_flf_text_changes_predictions():
    method = _method("fusion-flf")
    with torch.no_grad():
        method.cmaa.gamma.fill_(1.0)
    batch = make_batch(method, batch=1, num_kpt=6)
    other = dataclasses.replace(batch, support=dataclasses.replace(
        batch.support, keypoint_texts=[[f"point {i}" for i in range(6)]]))
    with torch.inference_mode():
        assert (method.predict(batch) - method.predict(other)).abs().max() > 1e-4


def test_flf_config_errors():
    with pytest.raises(ConfigError, match="direction"):
        _method("fusion-flf", perturb=False, **{"fusion.direction": "sideways"})
    with pytest.raises(ConfigError, match="same width"):
        _method("fusion-flf", perturb=False, text_encoder_options={"dim": 48})


def test_flf_keypoint_texts_missing_names_the_category():
    method = _method("fusion-flf")
    batch = make_batch(method, batch=1, num_kpt=6)
    short = dataclasses.replace(batch.support, keypoint_texts=[["nose"]])
    with pytest.raises(ConfigError, match="category 7 has 1 keypoint descriptions"), torch.inference_mode():
        method.encode_support(short)


# ----------------------------------------------------------------------------- DLF


def test_consistency_loss_hand_case():
    text = torch.tensor([[[0.1, 0.1], [0.5, 0.5], [0.9, 0.9]]])
    image = torch.tensor([[[0.4, 0.5], [0.5, 0.5], [0.0, 0.0]]])
    mask = torch.tensor([[True, True, False]])  # the third keypoint is not valid in the text path
    # Valid: (0.3^2 + 0.4^2) = 0.25 and 0; mean over the 2 valid keypoints.
    torch.testing.assert_close(consistency_loss(text, image, mask, "mse"), torch.tensor(0.125))
    torch.testing.assert_close(consistency_loss(text, image, mask, "l2"), torch.tensor(0.25))
    torch.testing.assert_close(consistency_loss(text, image, torch.zeros(1, 3, dtype=torch.bool)), torch.tensor(0.0))


def test_dlf_paths_share_input_proj_and_kpt_branch_only():
    method = _method("fusion-dlf")
    own = {k.split(".")[0] + "." + k.split(".")[1] for k in method.state_dict() if k.startswith("image_path.")}
    assert own == {"image_path.query_proj", "image_path.transformer"}
    assert method.image_path.query_proj.in_features == method.backbone.out_channels
    assert method.keypoint_head.text_proj.in_features == 48
    pointers = [p.data_ptr() for p in method.parameters()]
    assert len(pointers) == len(set(pointers))  # nothing tied: checkpoints save and load as is


def test_dlf_output_modes_and_loss_terms():
    method = _method("fusion-dlf")
    batch = make_batch(method, batch=2, num_kpt=7, seed=1)
    outputs = {}
    with torch.inference_mode():
        query, support = method.encode_query(batch.query), method.encode_support(batch.support)
        for mode in ("mean", "text", "image"):
            method.output = mode
            outputs[mode] = method.decode(query, support, batch.pairs)
    torch.testing.assert_close(outputs["mean"], (outputs["text"] + outputs["image"]) / 2, **TOLERANCE)
    assert (outputs["text"] - outputs["image"]).abs().max() > 1e-4
    method.output = "mean"

    method.train()
    losses = method.loss(batch)
    for prefix in ("", "image_"):
        assert {f"{prefix}heatmap_loss", f"{prefix}proposal_loss", f"{prefix}l1_loss_layer0",
                f"{prefix}l1_loss_layer1"} <= set(losses)
    losses["consistency_loss"].backward()
    # The consistency term reaches both paths' own parts.
    assert method.keypoint_head.transformer.proposal_generator.support_proj.weight.grad.abs().sum() > 0
    assert method.image_path.transformer.proposal_generator.support_proj.weight.grad.abs().sum() > 0
    method.zero_grad(set_to_none=True)
    method.eval()


def test_dlf_consistency_weight_is_a_config_value():
    batch = None
    values = {}
    for weight in (1.0, 0.25):
        method = _method("fusion-dlf", **{"fusion.consistency_weight": weight})
        batch = batch or make_batch(method, batch=1, num_kpt=6)
        with torch.no_grad():
            values[weight] = float(method.loss(batch)["consistency_loss"])
    assert values[1.0] > 0
    assert values[0.25] == pytest.approx(values[1.0] / 4, rel=1e-5)
    with pytest.raises(ConfigError, match="consistency"):
        _method("fusion-dlf", perturb=False, **{"fusion.consistency": "huber"})
    with pytest.raises(ConfigError, match="output"):
        _method("fusion-dlf", perturb=False, **{"fusion.output": "max"})


def test_dlf_checkpoint_round_trip(tmp_path):
    method = _method("fusion-dlf")
    path = save_checkpoint(method, tmp_path / "dlf", {"method": "fusion-dlf"})
    fresh = _method("fusion-dlf", perturb=False)
    load_checkpoint(fresh, path)
    batch = make_batch(method, batch=1, num_kpt=6)
    with torch.inference_mode():
        torch.testing.assert_close(fresh.predict(batch), method.predict(batch), atol=0, rtol=0)
