"""Prompt perturbations (typos, class noise, substitutions) and the robustness protocol end to end."""
from __future__ import annotations

import hashlib
import json
from collections import Counter

import numpy as np
import pytest
import torch

from cape_bench import perturb
from cape_bench.cli import main
from cape_bench.errors import ConfigError, DatasetError
from cape_bench.method import CapeMethod, Encoded, PairBatch, QueryBatch, SupportBatch
from cape_bench.registry import METHODS

# ------------------------------------------------------------------ test method
KNOWN_WORDS = None


def _known_words() -> set[str]:
    """Every word of the shipped descriptions and the fixture's keypoint names: what the test method 'understands'."""
    global KNOWN_WORDS
    if KNOWN_WORDS is None:
        from cape_bench.data.keypoint_texts import packaged_texts

        words = {w for lists in packaged_texts().lists.values() for strings in lists.values() for s in strings for w in s.lower().split()}
        KNOWN_WORDS = words | {f"kp_{i}" for i in range(100)}
    return KNOWN_WORDS


def _offset(text: str, scale: float) -> torch.Tensor:
    digest = hashlib.sha256(text.encode()).digest()
    return torch.tensor([digest[0] / 255 - 0.5, digest[1] / 255 - 0.5]) * scale


class PromptEcho(CapeMethod):
    """Support keypoints, shifted when a keypoint text has an unknown word and by a hash of the class name.

    Clean texts use known words only, so typos hurt it and substitutions with
    unknown words too; class names always shift it a little (differently per name).
    """

    support_kinds = frozenset({"keypoints", "text", "class"})
    trainable = False
    uses_query_image = False

    query_calls = 0

    def encode_query(self, query: QueryBatch) -> Encoded:
        PromptEcho.query_calls += 1
        return Encoded()

    def encode_support(self, support: SupportBatch) -> Encoded:
        slots = support.keypoints.shape[2]
        shift = torch.zeros(len(support.keypoint_texts), slots, 2)
        for b, texts in enumerate(support.keypoint_texts):
            for k, text in enumerate(texts):
                if not set(text.lower().split()) <= _known_words():
                    shift[b, k] = _offset(text, 0.3)
        return Encoded(per_keypoint={"keypoints": support.keypoints[:, 0] + shift.to(support.keypoints.device)})

    def decode(self, query: Encoded, support: Encoded, pairs: PairBatch) -> torch.Tensor:
        class_shift = torch.stack([_offset(name, 0.08) for name in pairs.class_names]).to(support.per_keypoint["keypoints"].device)
        return support.per_keypoint["keypoints"] + class_shift[:, None]


@pytest.fixture
def prompt_echo(monkeypatch, tmp_path):
    """Register the test method for one test (the registry is global); returns the run flags."""
    from cape_bench.registry import _Entry

    METHODS.names()  # discover the real methods first
    monkeypatch.setitem(METHODS._entries, "prompt-echo", _Entry("tests.test_robustness:PromptEcho", info={"support": "text+class"}))
    config = tmp_path / "test.py"
    config.write_text("input_size = 256\n")
    return ["--method", "prompt-echo", "--config", str(config)]


# ------------------------------------------------------------------------ typos
STRINGS = ["left eye", "right front paw", "root of tail", "top left side of the backrest", "nose", "B"]


def test_typo_generator_is_deterministic_and_seed_dependent():
    a = perturb.TypoGenerator(seed=3, edits_per_string=2)
    b = perturb.TypoGenerator(seed=3, edits_per_string=2)
    c = perturb.TypoGenerator(seed=4, edits_per_string=2)
    first = [a.corrupt(s, key=(7, i)).text for i, s in enumerate(STRINGS)]
    assert first == [b.corrupt(s, key=(7, i)).text for i, s in enumerate(STRINGS)]
    assert first != [c.corrupt(s, key=(7, i)).text for i, s in enumerate(STRINGS)]
    assert "1 2" == perturb.TypoGenerator(0).corrupt("1 2", key=(0,)).text  # no letter: unchanged


@pytest.mark.parametrize("edits", [1, 3])
def test_typo_edit_statistics(edits):
    generator = perturb.TypoGenerator(seed=0, edits_per_string=edits)
    ops = Counter()
    for i in range(400):
        text = STRINGS[i % len(STRINGS)]
        typo = generator.corrupt(text, key=(i,))
        assert len(typo.edits) == edits and typo.changed
        # Every edit changes the length by at most one letter.
        assert abs(len(typo.text) - len(text)) <= edits
        ops.update(edit["op"] for edit in typo.edits)
        for edit in typo.edits:
            if edit["op"] == "substitute":
                assert edit["to"].lower() in perturb.KEYBOARD_NEIGHBOURS[edit["from"].lower()]
    assert set(ops) == set(perturb.TYPO_OPS)
    # Roughly uniform over the five operations.
    assert min(ops.values()) > 0.1 * sum(ops.values())


def test_keyboard_neighbours_are_symmetric_and_local():
    for letter, near in perturb.KEYBOARD_NEIGHBOURS.items():
        assert letter not in near and 2 <= len(near) <= 6
        for other in near:
            assert letter in perturb.KEYBOARD_NEIGHBOURS[other]
    assert set(perturb.KEYBOARD_NEIGHBOURS["a"]) == set("qwsz")


def test_typo_rate_is_exact_and_nested():
    texts = {2: STRINGS[:5], 14: ["back", "beak", "belly", "breast", "crown"]}
    generator = perturb.TypoGenerator(seed=1)
    results = {rate: perturb.typo_texts(texts, rate, generator) for rate in (0.0, 0.3, 0.6, 1.0)}
    assert [results[r].strings_changed for r in (0.0, 0.3, 0.6, 1.0)] == [0, 3, 6, 10]
    changed = {r: {(c, i) for c, s in res.texts.items() for i, t in enumerate(s) if t != texts[c][i]} for r, res in results.items()}
    assert changed[0.3] <= changed[0.6] <= changed[1.0]
    for c, i in changed[0.3]:  # the same typo at every rate
        assert results[0.3].texts[c][i] == results[1.0].texts[c][i]
    assert results[1.0].categories_changed == 2 and results[1.0].sample[0]["edits"]


# ------------------------------------------------------------------ class noise
def test_class_noise_never_keeps_the_true_name_and_is_reproducible():
    names = perturb.mp100_class_names()
    assert len(names) == 100 and names.count("face") == 2
    true = ["face", "horse body", "Woodpecker", "face", "car"] * 400
    first = perturb.class_noise(true, 1.0, seed=5, stream=(1,))
    assert all(a != b for a, b in zip(first.names, true))
    assert set(first.names) <= set(names)
    assert first.names == perturb.class_noise(true, 1.0, seed=5, stream=(1,)).names
    assert first.names != perturb.class_noise(true, 1.0, seed=5, stream=(2,)).names
    # Uniform over the other categories: every one of the 98 non-face names shows up for 'face' pairs.
    face_draws = Counter(n for n, t in zip(first.names, true) if t == "face")
    assert len(face_draws) > 90


def test_class_noise_rate_and_nesting_and_global_random_untouched():
    import random

    random.seed(123)
    state = random.getstate()
    true = ["horse body"] * 200
    half = perturb.class_noise(true, 0.5, seed=0)
    full = perturb.class_noise(true, 1.0, seed=0)
    assert half.changed.sum() == 100 and full.changed.sum() == 200
    assert all(full.names[i] == half.names[i] for i in np.flatnonzero(half.changed))
    assert random.getstate() == state


# ---------------------------------------------------------------- substitutions
FIXTURE_TEXTS = {
    2: ["left eye", "right eye", "left front paw", "right front paw", "left elbow", "left shoulder", "pawn"],
    14: ["left eye", "beak", "eyebrow"],
    40: ["nose tip", "chin"],
}


def test_substitution_counts_on_a_fixture():
    texts, report = perturb.substitute_words(FIXTURE_TEXTS, [("paw", "foreleg"), ("eye", "eyeball")])
    assert texts[2][:4] == ["left eyeball", "right eyeball", "left front foreleg", "right front foreleg"]
    assert texts[2][6] == "pawn" and texts[14][2] == "eyebrow"  # whole words only
    assert report.strings_changed == 5 and report.categories_changed == 2
    assert report.strings_total == 12 and report.categories_total == 3
    by_rule = {r["rule"]: r for r in report.rules}
    assert by_rule["paw=foreleg"]["strings"] == 2 and by_rule["paw=foreleg"]["categories"] == 1
    assert by_rule["eye=eyeball"]["strings"] == 3 and by_rule["eye=eyeball"]["categories"] == 2
    assert not report.warnings


def test_substitution_is_simultaneous_and_warns_on_no_match():
    texts, report = perturb.substitute_words({1: ["left paw and foot"]}, [("paw", "foot"), ("foot", "paw"), ("wing", "arm")])
    assert texts[1] == ["left foot and paw"]
    assert len(report.warnings) == 1 and "wing=arm matches no keypoint description (0 of 1 strings in 1 categories)" in report.warnings[0]
    assert perturb.substitute_words({1: ["upper arm"]}, [("upper arm", "shoulder")])[0] == {1: ["shoulder"]}


def test_bad_noise_inputs_are_config_errors(tmp_path):
    from cape_bench.protocols.robustness import RobustnessProtocol

    with pytest.raises(ConfigError, match="unknown --noise 'typo'.*did you mean 'keypoint-typo'"):
        RobustnessProtocol(noise="typo")
    with pytest.raises(ConfigError, match=r"--noise-rate must be in \[0, 1\], got 1.5"):
        RobustnessProtocol(noise="class", noise_rate="0,1.5")
    with pytest.raises(ConfigError, match="--noise-rate must be numbers"):
        RobustnessProtocol(noise="class", noise_rate="half")
    with pytest.raises(ConfigError, match="expected OLD=NEW"):
        RobustnessProtocol(noise="keypoint-substitution", replace=["paw"])
    with pytest.raises(ConfigError, match="needs --noise"):
        RobustnessProtocol()
    bad = tmp_path / "syn.json"
    bad.write_text("[1, 2]")
    with pytest.raises(DatasetError, match="syn.json: expected a non-empty JSON object"):
        RobustnessProtocol(noise="synonym", synonyms=bad)


def test_labels_encode_the_noise_setting():
    from cape_bench.protocols.robustness import RobustnessProtocol

    assert RobustnessProtocol(noise="keypoint-typo").label() == "robustness-keypoint-typo"
    assert RobustnessProtocol(noise="class", noise_rate="0.5").label() == "robustness-class-rate0.5"
    assert RobustnessProtocol(noise="class", noise_rate="0,0.5,1").label() == "robustness-class-sweep"
    assert RobustnessProtocol(noise="keypoint-typo", typo_edits=2, noise_seed=3).label() == "robustness-keypoint-typo-edits2-seed3"
    assert RobustnessProtocol(noise="keypoint-substitution", replace=["shoulder=upper arm"]).label() == "robustness-keypoint-substitution-shoulder=upper_arm"


# ------------------------------------------------------------------- end to end
def _run(quirky_root, results, *extra):
    return main(["run", "--split", "1", "--data", str(quirky_root), "--results", str(results), "--num-episodes", "3", "--no-progress", *extra])


def test_robustness_cli_typo_on_the_fixture(quirky_root, tmp_path, capsys, prompt_echo):
    results = tmp_path / "res"
    assert _run(quirky_root, results, *prompt_echo, "--protocol", "robustness", "--noise", "keypoint-typo", "--per-category") == 0
    out = capsys.readouterr().out
    assert "clean PCK@0.2" in out and "perturbed PCK@0.2" in out and "drop" in out and "horse_body" in out
    record = json.loads((results / "runs" / "mp100" / "robustness-keypoint-typo" / "prompt-echo-test" / "split1.json").read_text())
    section = record["metrics"]
    assert section["applicable"] and section["noise"]["noise_seed"] == 0 and section["noise"]["rates"] == [1.0]
    point = section["curve"][0]
    assert point["perturbation"]["strings_changed"] == point["perturbation"]["strings_total"] > 0
    assert point["perturbation"]["sample"][0]["original"] != point["perturbation"]["sample"][0]["perturbed"]
    assert section["summary"]["drop"]["PCK@0.2"] > 0
    assert {row["category"] for row in section["per_category"]} == {"horse_body", "Woodpecker", "face", "car"}
    # The same episodes as the clean 1-shot run: the clean number is the oneshot number.
    assert _run(quirky_root, results, *prompt_echo) == 0
    oneshot = json.loads((results / "runs" / "mp100" / "oneshot" / "prompt-echo-test" / "split1.json").read_text())
    assert oneshot["episodes"]["sha256"] == record["episodes"]["sha256"]
    assert oneshot["metrics"]["overall"]["PCK@0.2"] == pytest.approx(section["clean"]["overall"]["PCK@0.2"])
    assert (results / "runs" / "mp100" / "robustness-keypoint-typo" / "prompt-echo-test" / "split1.perturbed-r1.npz").is_file()


def test_robustness_class_sweep_and_substitution_warning(quirky_root, tmp_path, capsys, prompt_echo):
    results = tmp_path / "res"
    PromptEcho.query_calls = 0
    assert _run(quirky_root, results, *prompt_echo, "--protocol", "robustness", "--noise", "class", "--noise-rate", "0,0.5,1") == 0
    # Queries are encoded once per category (5 categories, < 64 queries each), not once per evaluation.
    assert PromptEcho.query_calls == 5
    section = json.loads((results / "runs" / "mp100" / "robustness-class-sweep" / "prompt-echo-test" / "split1.json").read_text())["metrics"]
    rates = [p["rate"] for p in section["curve"]]
    assert rates == [0.0, 0.5, 1.0]
    assert section["curve"][0]["drop"]["PCK@0.2"] == 0
    half = section["curve"][1]["perturbation"]
    assert half["pairs_changed"] == round(0.5 * half["pairs_total"])
    assert section["curve"][2]["overall"]["PCK@0.2"] != section["clean"]["overall"]["PCK@0.2"]
    capsys.readouterr()
    assert _run(quirky_root, results, *prompt_echo, "--protocol", "robustness", "--noise", "keypoint-substitution", "--replace", "eye=eyeball", "--replace", "fin=wing") == 0
    captured = capsys.readouterr()
    assert "fin=wing matches no keypoint description" in captured.err
    section = json.loads((results / "runs" / "mp100" / "robustness-keypoint-substitution-eye=eyeball+fin=wing" / "prompt-echo-test" / "split1.json").read_text())["metrics"]
    rules = {r["rule"]: r for r in section["curve"][0]["perturbation"]["rules"]}
    assert rules["eye=eyeball"]["strings"] > 0 and rules["fin=wing"]["strings"] == 0


def test_support_copy_is_not_applicable(quirky_root, tmp_path, capsys):
    results = tmp_path / "res"
    assert _run(quirky_root, results, "--method", "support-copy", "--protocol", "robustness", "--noise", "class") == 0
    out = capsys.readouterr().out
    assert "not applicable" in out
    section = json.loads((results / "runs" / "mp100" / "robustness-class" / "support-copy-default" / "split1.json").read_text())["metrics"]
    assert section["applicable"] is False and "overall" not in section and "'class'" in section["reason"]


def test_noise_flags_need_the_robustness_protocol(quirky_root, tmp_path, capsys):
    assert _run(quirky_root, tmp_path / "r", "--method", "support-copy", "--noise", "class") == 2
    assert "--noise does not apply to --protocol oneshot" in capsys.readouterr().err


def test_fixed_variant_list_against_the_clean_one(quirky_root, tmp_path, prompt_echo):
    """CapeX's hand-written typo lists are evaluated as a variant of a --keypoint-texts file."""
    from tests.mp100_fixture import NUM_KEYPOINTS

    texts = tmp_path / "texts.json"
    texts.write_text(json.dumps({str(cid): {"typo_test": [f"keypoitn {i}" for i in range(k)]} for cid, k in NUM_KEYPOINTS.items()}))
    results = tmp_path / "res"
    assert _run(quirky_root, results, *prompt_echo, "--protocol", "robustness", "--noise", "keypoint-variant", "--noise-variant", "typo", "--keypoint-texts", str(texts)) == 0
    section = json.loads((results / "runs" / "mp100" / "robustness-keypoint-variant-typo" / "prompt-echo-test" / "split1.json").read_text())["metrics"]
    record = section["curve"][0]["perturbation"]
    assert record["strings_changed"] == record["strings_total"] == sum(NUM_KEYPOINTS.values())
    assert section["summary"]["drop"]["PCK@0.2"] > 0
