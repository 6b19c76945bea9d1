"""The CLI end to end on generated data, and its one-line errors (exit code 2, no traceback)."""
import json
import subprocess
import sys

import pytest

from cape_bench.cli import main


def run_cli(*args, env_results=None):
    return subprocess.run([sys.executable, "-m", "cape_bench.cli", *args], capture_output=True, text=True, timeout=300)


def assert_one_line_error(process, *fragments):
    assert process.returncode == 2, process.stderr
    assert "Traceback" not in process.stderr
    lines = [line for line in process.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("cape-bench: error:"), process.stderr
    for fragment in fragments:
        assert fragment in lines[0]


def test_list_shows_methods_and_protocols(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "support-copy" in out and "support: keypoints" in out and "oneshot" in out


def test_run_writes_results_and_reuses_them(quirky_root, tmp_path, capsys):
    results = tmp_path / "res"
    args = ["run", "--method", "support-copy", "--split", "1", "--data", str(quirky_root), "--results", str(results), "--num-episodes", "5", "--no-progress"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "| new" in out
    result_file = results / "runs" / "mp100" / "oneshot" / "support-copy-default" / "split1.json"
    record = json.loads(result_file.read_text())
    assert record["episodes"]["pairs"] == 5 * 5 * 15
    assert record["annotations"]["filtered"]["total"] == 5
    for key in ("versions", "device", "git_revision"):
        assert key in record["provenance"]
    assert {"PCK@0.2", "mPCK", "NME", "AUC", "EPE"} <= set(record["metrics"]["overall"])
    assert (result_file.with_name("split1.predictions.npz")).is_file()
    assert main(args) == 0
    assert "| reused" in capsys.readouterr().out
    assert main(args + ["--force"]) == 0
    assert "| new" in capsys.readouterr().out


def test_leaderboard_has_our_rows_and_marked_published_rows(quirky_root, tmp_path, capsys):
    results = tmp_path / "res"
    main(["run", "--method", "support-copy", "--split", "1", "--data", str(quirky_root), "--results", str(results), "--num-episodes", "4", "--no-progress"])
    assert main(["leaderboard", "--results", str(results), "--format", "md,csv"]) == 0
    board = (results / "leaderboard.md").read_text()
    assert "support-copy" in board and "95% CI" in board
    assert "CapeNext (published)" in board and "GraphCape (published)" in board
    assert (results / "leaderboard.csv").is_file()


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (["run", "--method", "suport-copy", "--no-progress"], ["unknown method 'suport-copy'", "did you mean 'support-copy'"]),
        (["run", "--method", "support-copy", "--protocol", "twoshot", "--no-progress"], ["unknown protocol 'twoshot'"]),
        (["run", "--method", "support-copy", "--split", "7", "--no-progress"], ["--split must be 1..5"]),
        (["run", "--method", "support-copy", "--config", "huge", "--data", "{root}", "--no-progress"], ["has no config 'huge'"]),
        (["run", "--method", "support-copy", "--data", "{missing}", "--no-progress"], ["no annotations/ folder"]),
    ],
)
def test_bad_names_are_one_line_errors(args, fragments, quirky_root, tmp_path):
    args = [a.format(root=quirky_root, missing=tmp_path / "missing") for a in args]
    assert_one_line_error(run_cli(*args), *fragments)


def _copy_root(quirky_root, tmp_path):
    import shutil

    target = tmp_path / "copy"
    shutil.copytree(quirky_root, target)
    return target


def test_missing_image_names_file_and_record(quirky_root, tmp_path):
    root = _copy_root(quirky_root, tmp_path)
    (root / "images" / "horse_body" / "2_0003.jpg").unlink()
    # support-copy reads no pixels, so ask `data verify`, which checks every image.
    process = run_cli("data", "verify", "--root", str(root))
    assert process.returncode == 1
    assert "images missing" in process.stdout and "horse_body/2_0003.jpg" in process.stdout


def test_unreadable_image_is_a_dataset_error(quirky_root, tmp_path):
    from cape_bench.data.crops import crop_instance
    from cape_bench.data.records import load_annotation_set
    from cape_bench.errors import DatasetError

    root = _copy_root(quirky_root, tmp_path)
    annotations = load_annotation_set(root / "annotations" / "mp100_split1_test.json")
    instance = annotations.instances[0]
    path = root / "images" / instance.file_name
    path.write_bytes(b"not a jpeg")
    with pytest.raises(DatasetError, match=rf"{instance.file_name}: cannot read the image .*annotation {instance.annotation_id}"):
        crop_instance(instance, path, 256)
    path.unlink()
    with pytest.raises(DatasetError, match="image file not found"):
        crop_instance(instance, path, 256)


def test_corrupt_annotation_through_cli(quirky_root, tmp_path):
    root = _copy_root(quirky_root, tmp_path)
    (root / "annotations" / "mp100_split3_test.json").write_text("{")
    process = run_cli("run", "--method", "support-copy", "--split", "3", "--data", str(root), "--no-progress", "--results", str(tmp_path / "r"))
    assert_one_line_error(process, "mp100_split3_test.json: not valid JSON")


def test_all_keypoints_invisible_is_counted_not_dropped_silently(quirky_root, tmp_path):
    root = _copy_root(quirky_root, tmp_path)
    path = root / "annotations" / "mp100_split1_test.json"
    data = json.loads(path.read_text())
    record = data["annotations"][5]
    record["keypoints"] = [value if i % 3 != 2 else 0 for i, value in enumerate(record["keypoints"])]
    record["num_keypoints"] = 0
    path.write_text(json.dumps(data))
    process = run_cli("data", "verify", "--root", str(root), "--no-images")
    assert "no_labelled_keypoints: 2" in process.stdout


def test_debug_shows_traceback(tmp_path):
    process = run_cli("--debug", "run", "--method", "nope", "--no-progress")
    assert process.returncode != 0 and "Traceback" in process.stderr


def test_run_needs_a_method_or_a_checkpoint():
    assert_one_line_error(run_cli("run", "--no-progress"), "--method is required")


def test_demo_run_trains_a_trainable_method_once_and_records_the_checkpoint(monkeypatch, tmp_path, capsys):
    import cape_bench.engine.demo_checkpoints as demo_checkpoints

    monkeypatch.setattr(demo_checkpoints, "DEMO_BUDGET", {**demo_checkpoints.DEMO_BUDGET, "max_iters": 2, "val_episodes": 1, "log_interval": 1})
    args = ["run", "--method", "capex", "--split", "2", "--num-episodes", "1", "--queries", "2", "--no-progress", "--results", str(tmp_path / "r")]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "training" in out.lower()
    record = json.loads(next((tmp_path / "r" / "runs" / "demo" / "oneshot").glob("capex-tiny/split2.json")).read_text())
    assert record["checkpoint"]["path"].endswith("best.safetensors") and len(record["checkpoint"]["sha256"]) == 64
    assert main(args + ["--force"]) == 0
    assert "training" not in capsys.readouterr().out.lower()  # the cached demo checkpoint is reused
