import pytest
import torch
from torch import nn

from cape_bench.checkpoints import load_checkpoint, save_checkpoint
from cape_bench.errors import CheckpointError


def _model(width=4):
    return nn.Sequential(nn.Linear(3, width), nn.LayerNorm(width))


def test_safetensors_round_trip(tmp_path):
    source, target = _model(), _model()
    path = save_checkpoint(source, tmp_path / "m", {"method": "x"})
    assert path.suffix == ".safetensors" and path.with_suffix(".json").is_file()
    load_checkpoint(target, path)
    for a, b in zip(source.state_dict().values(), target.state_dict().values()):
        assert torch.equal(a, b)


def test_mmcv_style_pth_is_read(tmp_path):
    path = tmp_path / "m.pth"
    torch.save({"state_dict": _model().state_dict(), "meta": {"epoch": 3}}, path)
    load_checkpoint(_model(), path)


def test_wrong_size_lists_mismatches_and_loads_nothing(tmp_path):
    path = save_checkpoint(_model(8), tmp_path / "big", {})
    target = _model(4)
    before = {k: v.clone() for k, v in target.state_dict().items()}
    with pytest.raises(CheckpointError, match=r"does not fit Sequential .*4 shape mismatches: .*0.weight: file \[8, 3\] vs model \[4, 3\]"):
        load_checkpoint(target, path)
    assert all(torch.equal(before[k], v) for k, v in target.state_dict().items())


def test_other_model_lists_missing_and_unexpected(tmp_path):
    path = tmp_path / "other.pth"
    torch.save({"encoder.weight": torch.zeros(2, 2)}, path)
    with pytest.raises(CheckpointError, match=r"missing 4 keys.*unexpected 1 keys"):
        load_checkpoint(_model(), path)


@pytest.mark.parametrize("content", [b"", b"garbage bytes", b"PK\x03\x04truncated"])
def test_corrupt_or_foreign_files(tmp_path, content):
    path = tmp_path / "bad.pth"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match="cannot read weights"):
        load_checkpoint(_model(), path)


def test_truncated_safetensors(tmp_path):
    path = save_checkpoint(_model(), tmp_path / "m", {})
    path.write_bytes(path.read_bytes()[:40])
    with pytest.raises(CheckpointError, match="cannot read weights"):
        load_checkpoint(_model(), path)


def test_not_a_state_dict(tmp_path):
    path = tmp_path / "list.pth"
    torch.save([1, 2, 3], path)
    with pytest.raises(CheckpointError, match="not a state dict"):
        load_checkpoint(_model(), path)


def test_missing_file(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(_model(), tmp_path / "nope.safetensors")
