"""Leaderboard tables from fixture runs, `cape-bench plot` figures and `cape-bench predict` on a generated image."""
from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from cape_bench.cli import main
from tests.test_robustness import prompt_echo  # noqa: F401 - fixture

PROFILE = {
    "schema": 1, "kind": "efficiency", "method": "capex", "config_name": "tiny", "config_hash": "x",
    "weights": "random init (config override random_init=True; ...)",
    "conditions": {"device": "cpu", "device_name": "Test CPU", "threads": 2, "label": "CPU: Test CPU", "compile": False, "iters": 100, "warmup": 10, "timer": "perf_counter"},
    "params": {"total": 23_783_000, "trainable": 1_069_000, "frozen": 22_714_000, "towers": {}, "by_submodule": []},
    "flops": {"query": {"flops": 437_900_000}, "prompt": {"flops": 1_813_800_000}, "full": {"flops": 2_251_700_000}},
    "latency": [
        {"dtype": "fp32", "batch": b, "latency_ms": 90.0 * b ** 0.7, "p90_ms": 100.0 * b ** 0.7, "fps": b * 1000 / (90.0 * b ** 0.7),
         "full_ms": 180.0 * b ** 0.7, "full_fps": b * 1000 / (180.0 * b ** 0.7), "memory": {"peak_mib": None, "above_weights_mib": None, "method": "n/a"}, "stages": {}}
        for b in (1, 8, 32)
    ],
}


@pytest.fixture
def fixture_results(quirky_root, tmp_path, prompt_echo):  # noqa: F811
    """A oneshot run, a robustness sweep, a not-applicable run and one profile, on the quirky fixture."""
    results = tmp_path / "res"
    common = ["--split", "1", "--data", str(quirky_root), "--results", str(results), "--num-episodes", "3", "--no-progress"]
    assert main(["run", "--method", "support-copy", *common]) == 0
    assert main(["run", *prompt_echo, "--protocol", "robustness", "--noise", "keypoint-typo", "--noise-rate", "0,0.5,1", *common]) == 0
    assert main(["run", "--method", "support-copy", "--protocol", "robustness", "--noise", "keypoint-typo", *common]) == 0
    (results / "profiles" / "capex-tiny").mkdir(parents=True)
    (results / "profiles" / "capex-tiny" / "cpu.json").write_text(json.dumps(PROFILE))
    return results


def test_leaderboard_renders_robustness_and_efficiency_tables(fixture_results, tmp_path, capsys):
    readme = tmp_path / "README.md"
    readme.write_text("# x\n\n## Leaderboard\n\n<!-- leaderboard:start -->\nold\n<!-- leaderboard:end -->\n\ntail\n")
    assert main(["plot", "--results", str(fixture_results), "--kind", "robustness,latency"]) == 0
    assert main(["leaderboard", "--results", str(fixture_results), "--format", "md,csv", "--readme", str(readme)]) == 0
    board = (fixture_results / "leaderboard.md").read_text()
    main_part, robustness_part = board.split("## Prompt robustness")[0], board.split("## Prompt robustness")[1].split("## Efficiency")[0]
    assert "| oneshot" in main_part and "prompt-echo" not in main_part  # robustness runs never enter the 1-shot table
    assert "prompt-echo" in robustness_part and "not applicable" in robustness_part
    assert "CapeNext w/ LW (published)" in robustness_part and "88.15" in robustness_part and "64.1" in robustness_part
    efficiency_part = board.split("## Efficiency")[1]
    assert "capex" in efficiency_part and "CPU Test CPU" in efficiency_part and "GraphCape (published)" in efficiency_part and "61.85" in efficiency_part
    robustness_csv = (fixture_results / "leaderboard.robustness.csv").read_text().splitlines()
    ours = [line for line in robustness_csv if "prompt-echo" in line]
    assert len(ours) == 3  # one row per rate of the sweep
    assert (fixture_results / "leaderboard.efficiency.csv").is_file()
    text = readme.read_text()
    assert "old" not in text and text.endswith("<!-- leaderboard:end -->\n\ntail\n")
    assert "### Prompt robustness" in text and "### Efficiency" in text
    assert "![robustness-mp100-keypoint-typo](res/figures/robustness-mp100-keypoint-typo.png)" in text


def test_readme_without_markers_is_an_error(fixture_results, tmp_path, capsys):
    readme = tmp_path / "README.md"
    readme.write_text("no markers\n")
    assert main(["leaderboard", "--results", str(fixture_results), "--readme", str(readme)]) == 2
    assert "no <!-- leaderboard:start -->" in capsys.readouterr().err


def _is_png(path) -> bool:
    image = cv2.imread(str(path))
    return path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and image is not None and image.shape[0] > 50


def test_plot_writes_every_figure(fixture_results, quirky_root, capsys):
    out = fixture_results / "figs"
    assert main(["plot", "--results", str(fixture_results), "--out", str(out), "--episodes", "0,2"]) == 0
    names = sorted(p.name for p in out.glob("*.png"))
    assert "latency-vs-batch.png" in names and "robustness-mp100-keypoint-typo.png" in names
    assert "qualitative-mp100-oneshot-support-copy-default-split1-ep0.png" in names
    assert "qualitative-mp100-oneshot-support-copy-default-split1-ep2.png" in names
    assert all(_is_png(out / name) for name in names)
    # The robustness run's perturbed predictions can be drawn too.
    assert main(["plot", "--results", str(fixture_results), "--out", str(out), "--kind", "qualitative", "--protocol", "robustness-keypoint-typo-sweep", "--predictions", "perturbed-r1"]) == 0
    assert (out / "qualitative-mp100-robustness-keypoint-typo-sweep-prompt-echo-test-split1-ep0.png").is_file()


def test_plot_errors(fixture_results, tmp_path, capsys):
    assert main(["plot", "--results", str(fixture_results), "--kind", "qualitative", "--episodes", "99"]) == 2
    assert "no episode 99" in capsys.readouterr().err
    assert main(["plot", "--results", str(tmp_path / "empty"), "--kind", "robustness"]) == 2
    assert "no stored results for a robustness figure" in capsys.readouterr().err
    assert main(["plot", "--results", str(fixture_results), "--kind", "heatmap"]) == 2


# ---------------------------------------------------------------------- predict
@pytest.fixture
def images(tmp_path):
    query = np.full((120, 160, 3), 70, np.uint8)
    cv2.circle(query, (80, 60), 30, (0, 180, 0), -1)
    cv2.imwrite(str(tmp_path / "query.png"), query)
    cv2.imwrite(str(tmp_path / "support.jpg"), np.full((100, 100, 3), 128, np.uint8))
    (tmp_path / "support.json").write_text(json.dumps([[20, 30], [80, 30, 2], [50, 70, 0]]))
    (tmp_path / "broken.jpg").write_bytes(b"not an image")
    return tmp_path


def test_predict_support_copy_on_a_generated_image(images, capsys):
    out = images / "drawn.png"
    args = ["predict", "--method", "support-copy", "--image", str(images / "query.png"), "--support-image", str(images / "support.jpg"),
            "--support-keypoints", str(images / "support.json"), "--skeleton", "0-1,1-2", "--keypoints", "left eye,right eye,nose", "--out", str(out)]
    assert main(args) == 0
    payload = json.loads(capsys.readouterr().out)
    assert [k["name"] for k in payload["keypoints"]] == ["left eye", "right eye", "nose"]
    # Support and query boxes are the whole images; both are made square about their centres, so the
    # support pose is copied relative to the centre, scaled by the longer sides (159 / 99).
    first = payload["keypoints"][0]
    assert first["x"] == pytest.approx(79.5 + (20 - 49.5) / 99 * 159, abs=0.05)
    assert first["y"] == pytest.approx(59.5 + (30 - 49.5) / 99 * 159, abs=0.05)
    assert _is_png(out)
    drawn = cv2.imread(str(out))
    assert drawn.shape == (120, 160, 3) and not np.array_equal(drawn, cv2.imread(str(images / "query.png")))


def test_predict_text_method_with_bbox(images, capsys, prompt_echo):  # noqa: F811
    out = images / "echo.png"
    args = ["predict", *prompt_echo, "--image", str(images / "query.png"), "--bbox", "40,20,80,80", "--keypoints", "left eye,right eye,nose",
            "--class", "cat", "--support-keypoints", str(images / "support.json"), "--out", str(out)]
    assert main(args) == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["bbox"] == [40.0, 20.0, 79.0, 79.0] and len(payload["keypoints"]) == 3
    assert out.is_file()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--image", "{d}/broken.jpg", "--support-keypoints", "{d}/support.json"], "broken.jpg: cannot read the image"),
        (["--image", "{d}/missing.png", "--support-keypoints", "{d}/support.json"], "missing.png: image file not found"),
        (["--image", "{d}/query.png", "--support-keypoints", "{d}/support.json", "--skeleton", "0-3"], "index 3 out of range for 3 keypoints"),
        (["--image", "{d}/query.png", "--support-keypoints", "{d}/support.json", "--skeleton", "0:1"], "cannot parse '0:1'"),
        (["--image", "{d}/query.png", "--keypoints", "a,,b"], "keypoint 1 is empty"),
        (["--image", "{d}/query.png", "--keypoints", "a,b"], "pass --support-keypoints FILE"),
        (["--image", "{d}/query.png", "--support-keypoints", "{d}/support.json", "--bbox", "1,2,3"], "expected x,y,w,h"),
        (["--image", "{d}/query.png", "--support-keypoints", "{d}/support.json", "--keypoints", "a,b"], "--keypoints names 2 keypoints but --support-keypoints holds 3"),
    ],
)
def test_predict_bad_input_is_one_line(images, capsys, extra, message):
    args = ["predict", "--method", "support-copy", *[a.format(d=images) for a in extra]]
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err
