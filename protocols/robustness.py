"""Prompt robustness: the 1-shot protocol on clean and on perturbed prompts, same episodes.

One result per split holds the clean evaluation, one perturbed evaluation per
noise rate (a sweep gives a curve), the drop, per-category comparisons and a
record of the perturbation (seed, rate, counts, a sample of perturbed strings).
Noise kinds (PROTOCOLS.md 3):

* `class`: the class name of a fraction of the pairs replaced by another MP-100
  class name (CapeNext Table 4; `cape_bench.perturb.class_noise`).
* `keypoint-typo`: seeded keyboard typos in a fraction of the keypoint
  descriptions (CapeX's own fixed typo lists are `keypoint-variant` with
  `--noise-variant typo` and `--keypoint-texts FILE`).
* `keypoint-substitution`: whole-word replacements `--replace paw=foreleg`
  (CapeNext Table 5); `synonym`: the same from a JSON file `--synonyms FILE`.
* `keypoint-variant`: the descriptions of another variant of the text lists
  (e.g. `typo`, `synonym` from `--keypoint-texts FILE`) against the clean ones.

A method whose `support_kinds` lacks what the noise perturbs ("class" for class
noise, "text" otherwise) is not run: its result says "not applicable".
Because the evaluator caches query encodings per category, each perturbed
evaluation only re-encodes the prompts and re-runs the decoder.
"""
from __future__ import annotations

import difflib
import hashlib
import sys
from dataclasses import dataclass, field
from pathlib import Path

from tabulate import tabulate

from cape_bench import perturb
from cape_bench.engine.evaluate import Prompts
from cape_bench.errors import ConfigError

HEADLINE = "PCK@0.2"
NEEDS = {"class": "class", "keypoint-typo": "text", "keypoint-substitution": "text", "synonym": "text", "keypoint-variant": "text"}
RATED = ("class", "keypoint-typo")


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "=.+" else "_" for c in text)


def _rate_text(rate: float) -> str:
    return f"{rate:g}"


@dataclass
class RobustnessProtocol:
    """Clean vs perturbed prompts on the same episodes (see module docstring).

    Args:
        shots: support shots (1 = the MP-100 1-shot protocol).
        noise: one of `cape_bench.perturb.NOISE_KINDS`.
        noise_rate: a rate in [0, 1] or a comma list (sweep) of them; fraction of
            pairs (class) or of keypoint strings (typos); None = 1.
        typo_edits: edits per corrupted string.
        replace: ["old=new", ...] for keypoint-substitution.
        synonyms: JSON file {word: replacement} for synonym.
        noise_variant: text-list variant for keypoint-variant.
        noise_seed: seed of every noise draw.
    """

    name = "robustness"
    shots: int = 1
    noise: str | None = None
    noise_rate: object = None
    typo_edits: int = 1
    replace: list[str] = field(default_factory=list)
    synonyms: str | Path | None = None
    noise_variant: str | None = None
    noise_seed: int = 0

    def __post_init__(self) -> None:
        if not self.noise:
            raise ConfigError(f"--protocol robustness needs --noise {{{','.join(perturb.NOISE_KINDS)}}}")
        if self.noise not in perturb.NOISE_KINDS:
            close = difflib.get_close_matches(self.noise, perturb.NOISE_KINDS, n=1, cutoff=0.4)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ConfigError(f"unknown --noise {self.noise!r}{hint} (known: {', '.join(perturb.NOISE_KINDS)})")
        if self.noise_rate is not None and self.noise not in RATED:
            raise ConfigError(f"--noise-rate applies to --noise class and keypoint-typo, not {self.noise!r} (substitutions change every occurrence)")
        self.rates = perturb.parse_rates(self.noise_rate)
        self.typo_edits = int(self.typo_edits)
        if self.noise == "keypoint-typo":
            perturb.TypoGenerator(self.noise_seed, self.typo_edits)  # validates typo_edits
        self.rules: list[tuple[str, str]] = []
        if self.noise == "keypoint-substitution":
            if self.synonyms:
                raise ConfigError("--synonyms FILE goes with --noise synonym; --noise keypoint-substitution takes --replace OLD=NEW")
            self.rules = [perturb.parse_replacement(r) for r in self.replace or []]
            if not self.rules:
                raise ConfigError("--noise keypoint-substitution needs at least one --replace OLD=NEW, e.g. --replace paw=foreleg")
        elif self.noise == "synonym":
            if not self.synonyms:
                raise ConfigError("--noise synonym needs --synonyms FILE (JSON {\"word\": \"replacement\", ...})")
            self.rules = perturb.load_synonyms(self.synonyms) + [perturb.parse_replacement(r) for r in self.replace or []]
        elif self.replace or self.synonyms:
            raise ConfigError(f"--replace/--synonyms go with --noise keypoint-substitution or synonym, not {self.noise!r}")
        if self.noise == "keypoint-variant" and not self.noise_variant:
            raise ConfigError("--noise keypoint-variant needs --noise-variant NAME (a variant of the --keypoint-texts lists, e.g. typo)")

    # --------------------------------------------------------------- identity
    @property
    def sweep(self) -> bool:
        return len(self.rates) > 1

    def label(self) -> str:
        """Result folder name; encodes every setting that is not the default."""
        parts = [self.name, self.noise]
        if self.noise == "keypoint-substitution":
            parts.append("+".join(_slug(f"{a}={b}") for a, b in self.rules))
        elif self.noise == "synonym":
            parts.append(_slug(Path(self.synonyms).stem))
        elif self.noise == "keypoint-variant":
            parts.append(_slug(self.noise_variant))
        if self.sweep:
            parts.append("sweep")
        elif self.noise in RATED and self.rates != [1.0]:
            parts.append(f"rate{_rate_text(self.rates[0])}")
        if self.noise == "keypoint-typo" and self.typo_edits != 1:
            parts.append(f"edits{self.typo_edits}")
        if self.noise_seed != 0 and self.noise in ("class", "keypoint-typo"):
            parts.append(f"seed{self.noise_seed}")
        if self.shots != 1:
            parts.append(f"{self.shots}shot")
        return "-".join(parts)

    def settings(self) -> dict:
        settings = {"name": self.name, "shots": self.shots, "noise": self.noise, "noise_seed": self.noise_seed}
        if self.noise in RATED:
            settings["rates"] = self.rates
        if self.noise == "keypoint-typo":
            settings["typo_edits"] = self.typo_edits
            settings["typo_ops"] = list(perturb.TYPO_OPS)
        if self.rules:
            settings["replacements"] = [f"{a}={b}" for a, b in self.rules]
        if self.synonyms:
            path = Path(self.synonyms)
            settings["synonyms_file"] = {"path": str(path), "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}
        if self.noise == "keypoint-variant":
            settings["noise_variant"] = self.noise_variant
        if self.noise == "class":
            settings["class_pool"] = "the 100 MP-100 category names, true name string excluded"
        return settings

    def describe(self) -> str:
        if self.rules:
            detail = ", ".join(f"{a}->{b}" for a, b in self.rules)
        elif self.noise == "keypoint-variant":
            detail = f"variant {self.noise_variant!r}"
        elif self.noise == "keypoint-typo":
            detail = f"{self.typo_edits} edit(s)/string, seed {self.noise_seed}"
        else:
            detail = f"seed {self.noise_seed}"
        return f"{self.noise} ({detail})"

    # ------------------------------------------------------------- evaluation
    def evaluate(self, context):
        method = context.evaluator.method
        needs = NEEDS[self.noise]
        base = {"kind": "robustness", "noise": self.settings()}
        if needs not in method.support_kinds:
            kinds = ", ".join(sorted(method.support_kinds)) or "nothing"
            reason = f"not applicable: the method consumes {kinds}; {self.noise} noise perturbs '{needs}'"
            return {**base, "applicable": False, "reason": reason}, {}

        clean_prompts = context.base_prompts()
        clean = context.evaluator.run(clean_prompts, fast=context.options.fast)
        clean_section, clean_table = context.score(clean)
        predictions = {"clean": clean}
        curve, warnings = [], []
        headline = None
        for rate in self.rates:
            prompts, record = self._perturb(context, clean_prompts, rate)
            warnings += record.pop("warnings", [])
            if _same_prompts(prompts, clean_prompts):
                section, table, perturbed = clean_section, clean_table, clean
            else:
                perturbed = context.evaluator.run(prompts, fast=context.options.fast)
                section, table = context.score(perturbed)
            point = {
                "rate": rate,
                **section,
                "drop": {m: clean_section["overall"][m] - section["overall"][m] for m in (HEADLINE, "mPCK")},
                "perturbation": record,
                "per_category_comparison": _per_category(clean_table, table, record),
            }
            curve.append(point)
            predictions[f"perturbed-r{_rate_text(rate)}"] = perturbed
            headline = point
        for warning in dict.fromkeys(warnings):
            print(f"cape-bench: warning: split {context.split}: {warning}", file=sys.stderr)
        summary = {
            "clean": {m: clean_section["overall"][m] for m in (HEADLINE, "mPCK")},
            "perturbed": {m: headline["overall"][m] for m in (HEADLINE, "mPCK")},
            "drop": headline["drop"],
            "rate": headline["rate"],
        }
        section = {
            **base,
            "applicable": True,
            "description": self.describe(),
            "summary": summary,
            "clean": clean_section,
            "curve": curve,
            "per_category": headline["per_category_comparison"],
            "warnings": list(dict.fromkeys(warnings)),
        }
        return section, predictions

    def _perturb(self, context, clean: Prompts, rate: float) -> tuple[Prompts, dict]:
        categories = context.annotations.categories
        names = {cid: categories[cid].name for cid in clean.keypoint_texts}
        record = {"rate": rate, "seed": self.noise_seed}
        if self.noise == "class":
            noise = perturb.class_noise(clean.class_names, rate, self.noise_seed, stream=(context.split,))
            changed_by_category = {}
            for (episode, _), changed in zip(context.evaluator.pairs, noise.changed):
                cid = context.episodes[episode].category_id
                changed_by_category[cid] = changed_by_category.get(cid, 0) + int(changed)
            record.update(noise.summary(), changed_by_category=changed_by_category)
            return Prompts(clean.keypoint_texts, noise.names), record
        if self.noise == "keypoint-typo":
            result = perturb.typo_texts(clean.keypoint_texts, rate, perturb.TypoGenerator(self.noise_seed, self.typo_edits), names)
            record["typo_edits"] = self.typo_edits
        elif self.noise in ("keypoint-substitution", "synonym"):
            _, result = perturb.substitute_words(clean.keypoint_texts, self.rules, names)
        else:
            variant = {cid: context.texts.texts(categories[cid], self.noise_variant) for cid in clean.keypoint_texts}
            result = perturb.compare_texts(clean.keypoint_texts, variant, names)
        record.update(result.summary())
        record["changed_by_category"] = {
            cid: sum(a != b for a, b in zip(clean.keypoint_texts[cid], result.texts[cid])) for cid in clean.keypoint_texts
        }
        return Prompts(result.texts, clean.class_names), record

    # --------------------------------------------------------------- printing
    def render(self, results: list, title: str) -> str:
        """The terminal table of `cape-bench run`: clean / perturbed / drop per split (and rate)."""
        rows = []
        for result in results:
            section = result.metrics
            if not section.get("applicable", False):
                rows.append([result.split, "-", "n/a", "n/a", "n/a", "n/a", "n/a", section.get("reason", "not applicable")])
                continue
            clean = section["clean"]["overall"]
            for point in section["curve"]:
                record = point["perturbation"]
                changed = (
                    f"{record['pairs_changed']}/{record['pairs_total']} pairs"
                    if "pairs_changed" in record
                    else f"{record['strings_changed']}/{record['strings_total']} strings, {record['categories_changed']} cat."
                )
                rows.append([
                    result.split, _rate_text(point["rate"]), 100 * clean[HEADLINE], 100 * point["overall"][HEADLINE],
                    100 * point["drop"][HEADLINE], 100 * clean["mPCK"], 100 * point["overall"]["mPCK"], changed,
                ])
        numeric = [r for r in rows if r[2] != "n/a"]
        rates = sorted({r[1] for r in numeric})
        if len({r[0] for r in numeric}) > 1:
            for rate in rates:
                picked = [r for r in numeric if r[1] == rate]
                rows.append(["mean", rate] + [sum(r[i] for r in picked) / len(picked) for i in range(2, 7)] + [""])
        headers = ["split", "rate", f"clean {HEADLINE}", f"perturbed {HEADLINE}", "drop", "clean mPCK", "perturbed mPCK", "changed"]
        lines = [f"{title} | noise: {self.describe()}", tabulate(rows, headers=headers, floatfmt=".2f", tablefmt="github")]
        for result in results:
            for warning in result.metrics.get("warnings", []):
                lines.append(f"warning: split {result.split}: {warning}")
        return "\n".join(lines)

    def render_per_category(self, results: list) -> str:
        rows = []
        for result in results:
            for row in result.metrics.get("per_category", []):
                rows.append([result.split, row["category"], row["pairs"], 100 * row[f"clean {HEADLINE}"], 100 * row[f"perturbed {HEADLINE}"], 100 * row["drop"], row["changed"]])
        if not rows:
            return ""
        return tabulate(rows, headers=["split", "category", "pairs", f"clean {HEADLINE}", f"perturbed {HEADLINE}", "drop", "changed"], floatfmt=".2f", tablefmt="github")


def _same_prompts(a: Prompts, b: Prompts) -> bool:
    return a.class_names == b.class_names and a.keypoint_texts == b.keypoint_texts


def _per_category(clean_table, perturbed_table, record: dict) -> list[dict]:
    """Per category: pair-mean PCK@0.2 / mPCK clean and perturbed, drop, and how many strings (or pairs) changed."""
    changed = record.get("changed_by_category", {})
    unit = "pairs" if "pairs_changed" in record else "strings"
    clean = clean_table.groupby("category_id", sort=True)
    perturbed = perturbed_table.groupby("category_id", sort=True)
    rows = []
    for category_id, group in clean:
        other = perturbed.get_group(category_id)
        clean_pck, perturbed_pck = float(group[HEADLINE].mean()), float(other[HEADLINE].mean())
        rows.append({
            "category_id": int(category_id),
            "category": str(group["category"].iloc[0]),
            "pairs": len(group),
            f"clean {HEADLINE}": clean_pck,
            f"perturbed {HEADLINE}": perturbed_pck,
            "drop": clean_pck - perturbed_pck,
            "changed": f"{changed.get(category_id, changed.get(str(category_id), 0))} {unit}",
        })
    return rows
