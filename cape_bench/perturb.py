"""Test-time prompt perturbations: keypoint typos, word substitutions, wrong class names.

Everything here is a pure function of its inputs and a seed, and draws from its
own `numpy.random.Generator`, never from the global `random` stream (upstream
CapeNext's class noise uses the global stream, whose state depends on episode
construction; PROTOCOLS.md 3.2). Perturbations are applied to the prompts only:
episodes, crops and masks stay those of the clean run.

Nesting: every string and every pair gets a fixed random priority from the
seed, and a rate r perturbs the round(r * N) items of highest priority, each
with the same edit it would get at any other rate. So a sweep
`--noise-rate 0,0.25,0.5,1` perturbs nested sets, and its curve measures the
rate, not a fresh draw per point.

Example:
    >>> typos = TypoGenerator(seed=0, edits_per_string=1)
    >>> typos.corrupt("left eye", key=(2, 0)).text != "left eye"
    True
    >>> substitute_words({2: ["left front paw", "nose"]}, [("paw", "foreleg")])[0]
    {2: ['left front foreleg', 'nose']}
"""
from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cape_bench.errors import ConfigError, DatasetError

NOISE_KINDS = ("class", "keypoint-typo", "keypoint-substitution", "synonym", "keypoint-variant")
TYPO_OPS = ("insert", "delete", "substitute", "transpose", "double")
SAMPLE_SIZE = 25

_QWERTY_ROWS = ("qwertyuiop", "asdfghjkl", "zxcvbnm")


def _keyboard_neighbours() -> dict[str, str]:
    """Letters touching each key on a US QWERTY keyboard (rows are staggered by half a key)."""
    neighbours: dict[str, list[str]] = {}
    for r, row in enumerate(_QWERTY_ROWS):
        for i, letter in enumerate(row):
            near = [row[j] for j in (i - 1, i + 1) if 0 <= j < len(row)]
            # The row above is shifted left by half a key, the row below right.
            if r > 0:
                above = _QWERTY_ROWS[r - 1]
                near += [above[j] for j in (i, i + 1) if 0 <= j < len(above)]
            if r < len(_QWERTY_ROWS) - 1:
                below = _QWERTY_ROWS[r + 1]
                near += [below[j] for j in (i - 1, i) if 0 <= j < len(below)]
            neighbours[letter] = "".join(sorted(set(near)))
    return neighbours


KEYBOARD_NEIGHBOURS = _keyboard_neighbours()


def _same_case(letter: str, like: str) -> str:
    return letter.upper() if like.isupper() else letter


# --------------------------------------------------------------------------- typos
@dataclass(frozen=True)
class Typo:
    """One corrupted string and the edits that made it (positions refer to the string at that step)."""

    original: str
    text: str
    edits: tuple[dict, ...]

    @property
    def changed(self) -> bool:
        return self.text != self.original


@dataclass(frozen=True)
class TypoGenerator:
    """Seeded keyboard typos: insert, delete, substitute (QWERTY neighbour), transpose, double.

    Every edit touches letters only (spaces, digits and punctuation are left
    alone); the operation is drawn uniformly from those possible on the current
    string, then the position uniformly. A string gets exactly
    `edits_per_string` edits and is guaranteed to differ from the original
    (a draw whose edits cancel out is redrawn); a string with no letter is
    returned unchanged.

    Args:
        seed: The noise seed; with `key` it fixes every draw.
        edits_per_string: Edits applied to each corrupted string (>= 1).
    """

    seed: int = 0
    edits_per_string: int = 1

    def __post_init__(self) -> None:
        if int(self.edits_per_string) < 1:
            raise ConfigError(f"--typo-edits must be >= 1, got {self.edits_per_string}")

    def rng(self, key: Sequence[int]) -> np.random.Generator:
        """The generator of one string: a function of (seed, key) only."""
        return np.random.default_rng([int(self.seed), *(int(k) for k in key)])

    def corrupt(self, text: str, key: Sequence[int] = (), rng: np.random.Generator | None = None) -> Typo:
        """`text` with `edits_per_string` typos; `key` (e.g. category id, keypoint index) picks the stream."""
        rng = rng if rng is not None else self.rng(key)
        if not any(c.isalpha() for c in text):
            return Typo(text, text, ())
        for _attempt in range(20):
            current, edits = text, []
            for _ in range(self.edits_per_string):
                current, edit = _one_edit(current, rng)
                edits.append(edit)
            if current != text:
                return Typo(text, current, tuple(edits))
        raise AssertionError(f"could not corrupt {text!r} in 20 draws")  # pragma: no cover - needs cancelling edits 20 times


def _letter_positions(text: str) -> list[int]:
    return [i for i, c in enumerate(text) if c.isalpha()]


def _possible_ops(text: str) -> dict[str, list[int]]:
    letters = _letter_positions(text)
    ops = {
        "insert": letters,
        "substitute": [i for i in letters if text[i].lower() in KEYBOARD_NEIGHBOURS],
        "double": letters,
        "transpose": [i for i in letters[:-1] if i + 1 < len(text) and text[i + 1].isalpha() and text[i] != text[i + 1]],
        # Deleting a one-letter string would leave nothing to read.
        "delete": letters if len(letters) > 1 else [],
    }
    return {name: positions for name, positions in ops.items() if positions}


def _one_edit(text: str, rng: np.random.Generator) -> tuple[str, dict]:
    ops = _possible_ops(text)
    names = [name for name in TYPO_OPS if name in ops]
    op = names[int(rng.integers(len(names)))]
    positions = ops[op]
    i = positions[int(rng.integers(len(positions)))]
    letter = text[i]
    if op == "insert":
        # A finger slipping onto a neighbouring key, before or after the intended one.
        pool = KEYBOARD_NEIGHBOURS.get(letter.lower(), "etaoinshr")
        new = _same_case(pool[int(rng.integers(len(pool)))], letter)
        at = i + int(rng.integers(2))
        return text[:at] + new + text[at:], {"op": op, "position": at, "char": new}
    if op == "delete":
        return text[:i] + text[i + 1 :], {"op": op, "position": i, "char": letter}
    if op == "substitute":
        pool = KEYBOARD_NEIGHBOURS[letter.lower()]
        new = _same_case(pool[int(rng.integers(len(pool)))], letter)
        return text[:i] + new + text[i + 1 :], {"op": op, "position": i, "from": letter, "to": new}
    if op == "transpose":
        return text[:i] + text[i + 1] + text[i] + text[i + 2 :], {"op": op, "position": i, "chars": text[i : i + 2]}
    return text[: i + 1] + letter + text[i + 1 :], {"op": op, "position": i, "char": letter}


@dataclass
class TextPerturbation:
    """Perturbed keypoint texts of a split and what changed."""

    texts: dict[int, list[str]]
    strings_total: int
    strings_changed: int
    categories_total: int
    categories_changed: int
    sample: list[dict] = field(default_factory=list)
    rules: list[dict] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def summary(self) -> dict:
        return {
            "strings_total": self.strings_total,
            "strings_changed": self.strings_changed,
            "categories_total": self.categories_total,
            "categories_changed": self.categories_changed,
            **({"rules": self.rules} if self.rules else {}),
            **({"warnings": self.warnings} if self.warnings else {}),
            "sample": self.sample,
        }


def _priority_rank(scores: dict, rate: float) -> set:
    """The round(rate * N) keys of lowest score (scores are i.i.d. uniform, so lowest = a random subset)."""
    count = round(rate * len(scores))
    ordered = sorted(scores, key=lambda k: (scores[k], k))
    return set(ordered[:count])


def typo_texts(keypoint_texts: dict[int, list[str]], rate: float, generator: TypoGenerator, category_names: dict[int, str] | None = None) -> TextPerturbation:
    """Corrupt a fraction `rate` of all strings of a split (exactly round(rate * N), nested across rates).

    Each string (category id, keypoint index) has its own stream: its priority
    is the stream's first draw and its typo comes from the following draws, so
    a string's typo never depends on the other categories in the split.
    """
    _check_rate(rate)
    streams, priority = {}, {}
    for category_id, strings in keypoint_texts.items():
        for index, text in enumerate(strings):
            if any(c.isalpha() for c in text):
                rng = generator.rng((category_id, index))
                priority[(category_id, index)] = float(rng.random())
                streams[(category_id, index)] = rng
    chosen = _priority_rank(priority, rate)
    texts, sample, changed_categories, changed = {}, [], set(), 0
    for category_id in sorted(keypoint_texts):
        out = list(keypoint_texts[category_id])
        for index, text in enumerate(out):
            if (category_id, index) not in chosen:
                continue
            typo = generator.corrupt(text, rng=streams[(category_id, index)])
            out[index] = typo.text
            changed += 1
            changed_categories.add(category_id)
            if len(sample) < SAMPLE_SIZE:
                sample.append(_sample_row(category_id, category_names, index, text, typo.text, edits=list(typo.edits)))
        texts[category_id] = out
    return TextPerturbation(texts, sum(len(s) for s in keypoint_texts.values()), changed, len(keypoint_texts), len(changed_categories), sample)


def _sample_row(category_id, category_names, index, original, perturbed, **extra) -> dict:
    row = {"category_id": int(category_id)}
    if category_names:
        row["category"] = category_names.get(category_id, "")
    return {**row, "keypoint": index, "original": original, "perturbed": perturbed, **extra}


# ---------------------------------------------------------------- substitutions
def parse_replacement(text: str) -> tuple[str, str]:
    """'paw=foreleg' -> ('paw', 'foreleg'); 'shoulder=upper arm' keeps the space."""
    old, sep, new = text.partition("=")
    old, new = old.strip(), new.strip()
    if not sep or not old or not new:
        raise ConfigError(f"--replace {text!r}: expected OLD=NEW with both words non-empty, e.g. --replace paw=foreleg")
    return old, new


def load_synonyms(path: str | Path) -> list[tuple[str, str]]:
    """A JSON object {word: replacement} -> replacement rules."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{path}: synonym file not found (expected JSON {{\"word\": \"replacement\", ...}})")
    try:
        raw = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise DatasetError(f"{path}: not valid JSON ({error})") from None
    if not isinstance(raw, dict) or not raw:
        raise DatasetError(f"{path}: expected a non-empty JSON object {{\"word\": \"replacement\", ...}}")
    rules = []
    for word, replacement in raw.items():
        if not isinstance(replacement, str) or not word.strip() or not replacement.strip():
            raise DatasetError(f"{path}: entry {word!r}: expected a non-empty string replacement, got {replacement!r}")
        rules.append((word.strip(), replacement.strip()))
    return rules


def _rule_pattern(rules: Sequence[tuple[str, str]]) -> re.Pattern:
    # Longest first, so "front paw" wins over "paw"; (?<!\w)/(?!\w) instead of \b
    # so that rules starting or ending with a non-word character still match whole words.
    words = sorted({old for old, _ in rules}, key=lambda w: (-len(w), w))
    return re.compile(r"(?<!\w)(" + "|".join(re.escape(w) for w in words) + r")(?!\w)", re.IGNORECASE)


def substitute_words(keypoint_texts: dict[int, list[str]], rules: Sequence[tuple[str, str]], category_names: dict[int, str] | None = None) -> tuple[dict[int, list[str]], TextPerturbation]:
    """Replace whole words (case-insensitive) in every string where they occur, all rules at once.

    Simultaneous, not chained: with paw=foot and foot=paw the two swap. This is
    the CapeNext `manual_modification*` mechanism (PROTOCOLS.md 3.3) restricted
    to whole words, applied to every category whose descriptions contain the
    word (upstream only touched categories whose texts come from JSON names).

    Returns:
        (texts, report): the report counts strings and categories changed per
        rule and overall, and warns for every rule that matched nothing.
    """
    if not rules:
        raise ConfigError("keypoint substitution needs at least one --replace OLD=NEW (or --synonyms FILE)")
    lookup = {}
    for old, new in rules:
        if old.lower() in lookup and lookup[old.lower()] != new:
            raise ConfigError(f"two replacements for {old!r}: {lookup[old.lower()]!r} and {new!r}")
        lookup[old.lower()] = new
    pattern = _rule_pattern(rules)
    per_rule = {old.lower(): {"rule": f"{old}={new}", "strings": 0, "categories": set(), "occurrences": 0} for old, new in rules}
    texts, sample, changed, changed_categories = {}, [], 0, set()
    for category_id in sorted(keypoint_texts):
        out = []
        for index, text in enumerate(keypoint_texts[category_id]):
            hits = [m.group(1).lower() for m in pattern.finditer(text)]
            new_text = pattern.sub(lambda m: lookup[m.group(1).lower()], text)
            for word in set(hits):
                per_rule[word]["strings"] += 1
                per_rule[word]["categories"].add(category_id)
            for word in hits:
                per_rule[word]["occurrences"] += 1
            if new_text != text:
                changed += 1
                changed_categories.add(category_id)
                if len(sample) < SAMPLE_SIZE:
                    sample.append(_sample_row(category_id, category_names, index, text, new_text))
            out.append(new_text)
        texts[category_id] = out
    total_strings = sum(len(s) for s in keypoint_texts.values())
    rule_rows, warnings = [], []
    for entry in per_rule.values():
        rule_rows.append({"rule": entry["rule"], "strings": entry["strings"], "categories": len(entry["categories"]), "occurrences": entry["occurrences"]})
        if entry["strings"] == 0:
            warnings.append(
                f"replacement {entry['rule']} matches no keypoint description "
                f"(0 of {total_strings} strings in {len(keypoint_texts)} categories)"
            )
    report = TextPerturbation(texts, total_strings, changed, len(keypoint_texts), len(changed_categories), sample, rule_rows, warnings)
    return texts, report


def compare_texts(clean: dict[int, list[str]], perturbed: dict[int, list[str]], category_names: dict[int, str] | None = None) -> TextPerturbation:
    """Counts and a sample for two given lists (e.g. a fixed typo list against the regular one)."""
    sample, changed, categories = [], 0, set()
    for category_id in sorted(clean):
        for index, (a, b) in enumerate(zip(clean[category_id], perturbed[category_id])):
            if a != b:
                changed += 1
                categories.add(category_id)
                if len(sample) < SAMPLE_SIZE:
                    sample.append(_sample_row(category_id, category_names, index, a, b))
    return TextPerturbation(perturbed, sum(len(s) for s in clean.values()), changed, len(clean), len(categories), sample)


# ------------------------------------------------------------------ class noise
def mp100_class_names() -> list[str]:
    """The 100 MP-100 class names as CapeNext prompts them ('horse body'), in category-id order.

    'face' appears twice (categories 18 and 40), as in MP-100.
    """
    from cape_bench.data.mp100_table import mp100_categories

    return [category.name.replace("_", " ") for category in mp100_categories().values()]


@dataclass
class ClassNoise:
    """Wrong class names for a fraction of the pairs."""

    names: list[str]
    changed: np.ndarray
    sample: list[dict]

    def summary(self) -> dict:
        return {"pairs_total": len(self.names), "pairs_changed": int(self.changed.sum()), "sample": self.sample}


def class_noise(true_names: Sequence[str], rate: float, seed: int, stream: Iterable[int] = (), pool: Sequence[str] | None = None) -> ClassNoise:
    """Replace the class name of round(rate * N) pairs by a different MP-100 class name.

    Per pair, the wrong name is drawn uniformly from the categories of `pool`
    (default: all 100 MP-100 categories) whose name differs from the true name;
    so a 'face' pair never gets 'face' (the other face category) and every
    other pair draws one of the other 99 categories. The draw comes from
    `numpy.random.default_rng([seed, *stream])` (the protocol passes the split as
    `stream`), priority first, then the pick, so every rate of a sweep changes
    a nested set of pairs in the same way.

    Raises:
        ConfigError: the rate is outside [0, 1].
    """
    _check_rate(rate)
    pool = list(pool if pool is not None else mp100_class_names())
    rng = np.random.default_rng([int(seed), *(int(s) for s in stream)])
    count = len(true_names)
    priority = rng.random(count)
    pick = rng.random(count)
    candidates = {name: [p for p in pool if p != name] for name in set(true_names)}
    chosen = np.zeros(count, dtype=bool)
    chosen[np.argsort(priority, kind="stable")[: round(rate * count)]] = True
    names, sample = list(true_names), []
    for i in np.flatnonzero(chosen):
        options = candidates[true_names[i]]
        names[i] = options[min(int(pick[i] * len(options)), len(options) - 1)]
        if len(sample) < SAMPLE_SIZE:
            sample.append({"pair": int(i), "true": true_names[i], "used": names[i]})
    return ClassNoise(names, chosen, sample)


def _check_rate(rate: float) -> None:
    if not (0.0 <= float(rate) <= 1.0):
        raise ConfigError(f"--noise-rate must be in [0, 1], got {rate}")


def parse_rates(value: str | float | Sequence[float] | None) -> list[float]:
    """'0,0.25,1' -> [0.0, 0.25, 1.0] (sorted, unique); each in [0, 1]."""
    if value is None:
        return [1.0]
    if isinstance(value, (int, float)):
        items = [value]
    elif isinstance(value, str):
        items = [v for v in value.split(",") if v.strip()]
    else:
        items = list(value)
    rates = []
    for item in items:
        try:
            rate = float(item)
        except (TypeError, ValueError):
            raise ConfigError(f"--noise-rate must be numbers in [0, 1] (comma list for a sweep), got {value!r}") from None
        _check_rate(rate)
        rates.append(rate)
    if not rates:
        raise ConfigError(f"--noise-rate must be numbers in [0, 1] (comma list for a sweep), got {value!r}")
    return sorted(set(rates))
