"""The misuse taxonomy: categories (pipeline.schemas.Category) and their subcategories,
plus the tables that translate third-party guard labels into it.

Three external vocabularies are mapped, each label -> (Category, subcategory | None):

- MLCommons hazards S1-S14 as emitted by Llama Guard 3 and 4 (``MLCOMMONS_HAZARDS``),
- OpenAI moderation categories (``OPENAI_MODERATION``),
- Qwen3Guard categories (``QWEN3GUARD_CATEGORIES``) and its severity levels.

``None`` as subcategory means the external label is broader than any one of ours (e.g.
S2 "Non-Violent Crimes" covers hacking and fraud alike). The reverse direction (our
subcategory -> their labels) is derived from the same tables plus ``PARTIAL_COUNTERPARTS``
for the broad labels. docs/taxonomy.md holds the prose and a tables block rendered from
this module by :func:`render_mapping_markdown`; a unit test fails when it is stale.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from types import MappingProxyType

from pipeline.schemas import Category

SUBCATEGORIES: dict[Category, tuple[str, ...]] = {
    Category.CYBER_ABUSE: (
        "malware",
        "phishing_social_engineering",
        "intrusion_exploitation",
        "credential_theft",
        "denial_of_service",
        "bot_automation",
    ),
    Category.MISINFORMATION: (
        "fabricated_content",
        "defamation",
        "health",
        "election",
        "historical",
        "impersonation",
    ),
    Category.JAILBREAK: ("role_play", "dan", "prompt_injection"),
    Category.OTHER_HARM: (
        "weapons_cbrn",
        "violent_crime",
        "hate",
        "self_harm",
        "sexual",
        "fraud",
    ),
}


def check_subcategory(category: Category, subcategory: str | None) -> None:
    if subcategory is not None and subcategory not in SUBCATEGORIES[category]:
        raise ValueError(f"unknown subcategory {subcategory!r} for {category}")


@dataclass(frozen=True)
class Target:
    """Where an external label lands in our taxonomy."""

    category: Category
    subcategory: str | None = None

    def __post_init__(self) -> None:
        check_subcategory(self.category, self.subcategory)

    def __str__(self) -> str:
        return f"{self.category}/{self.subcategory}" if self.subcategory else str(self.category)


@dataclass(frozen=True)
class ExternalLabel:
    """One label of a third-party taxonomy and where it maps.

    ``code`` is what the guard model emits (``S9``, ``illicit/violent``, ``Violent``);
    ``name`` is the human-readable title; ``note`` says why a mapping is partial.
    """

    code: str
    name: str
    target: Target
    note: str = ""


CY, MI, JB, OH = Category.CYBER_ABUSE, Category.MISINFORMATION, Category.JAILBREAK, Category.OTHER_HARM


def _table(*labels: ExternalLabel) -> Mapping[str, ExternalLabel]:
    return MappingProxyType({label.code: label for label in labels})


# Llama Guard 3 (and 4) categories: the 13 MLCommons AILuminate v0.5 hazards plus S14.
MLCOMMONS_HAZARDS: Mapping[str, ExternalLabel] = _table(
    ExternalLabel("S1", "Violent Crimes", Target(OH, "violent_crime")),
    ExternalLabel(
        "S2", "Non-Violent Crimes", Target(OH),
        "covers cyber crimes (hacking, malware, phishing) and fraud alike; no single subcategory",
    ),
    ExternalLabel("S3", "Sex-Related Crimes", Target(OH, "sexual")),
    ExternalLabel("S4", "Child Sexual Exploitation", Target(OH, "sexual")),
    ExternalLabel("S5", "Defamation", Target(MI, "defamation")),
    ExternalLabel(
        "S6", "Specialized Advice", Target(OH),
        "unqualified financial, medical or legal advice; not misinformation by itself",
    ),
    ExternalLabel("S7", "Privacy", Target(OH), "disclosure of personal data; we have no privacy subcategory"),
    ExternalLabel("S8", "Intellectual Property", Target(OH), "we have no IP subcategory"),
    ExternalLabel("S9", "Indiscriminate Weapons", Target(OH, "weapons_cbrn")),
    ExternalLabel("S10", "Hate", Target(OH, "hate")),
    ExternalLabel("S11", "Suicide & Self-Harm", Target(OH, "self_harm")),
    ExternalLabel("S12", "Sexual Content", Target(OH, "sexual")),
    ExternalLabel("S13", "Elections", Target(MI, "election")),
    ExternalLabel(
        "S14", "Code Interpreter Abuse", Target(CY),
        "container escape, privilege escalation and denial of service through tool calls",
    ),
)

# OpenAI moderation (omni-moderation) category keys, as in the API response.
OPENAI_MODERATION: Mapping[str, ExternalLabel] = _table(
    ExternalLabel("harassment", "Harassment", Target(OH), "harassment of a non-protected target; no subcategory"),
    ExternalLabel("harassment/threatening", "Harassment: threatening", Target(OH, "violent_crime"),
                  "threats of violence or serious harm"),
    ExternalLabel("hate", "Hate", Target(OH, "hate")),
    ExternalLabel("hate/threatening", "Hate: threatening", Target(OH, "hate")),
    ExternalLabel("illicit", "Illicit", Target(OH), "advice on wrongdoing in general, cyber crime and fraud included"),
    ExternalLabel("illicit/violent", "Illicit: violent", Target(OH, "violent_crime"),
                  "violent wrongdoing or procuring weapons (not only CBRN)"),
    ExternalLabel("self-harm", "Self-harm", Target(OH, "self_harm")),
    ExternalLabel("self-harm/intent", "Self-harm: intent", Target(OH, "self_harm")),
    ExternalLabel("self-harm/instructions", "Self-harm: instructions", Target(OH, "self_harm")),
    ExternalLabel("sexual", "Sexual", Target(OH, "sexual")),
    ExternalLabel("sexual/minors", "Sexual: minors", Target(OH, "sexual")),
    ExternalLabel("violence", "Violence", Target(OH, "violent_crime"), "depictions of violence, not only crime"),
    ExternalLabel("violence/graphic", "Violence: graphic", Target(OH, "violent_crime"), "graphic depictions"),
)

# Qwen3Guard-Gen category names, spelled as the model emits them after "Categories: ".
QWEN3GUARD_CATEGORIES: Mapping[str, ExternalLabel] = _table(
    ExternalLabel("Violent", "Violent", Target(OH, "violent_crime"),
                  "includes making or using weapons; CBRN is not separated"),
    ExternalLabel("Non-violent Illegal Acts", "Non-violent Illegal Acts", Target(OH),
                  "hacking, drug production, theft together; no single subcategory"),
    ExternalLabel("Sexual Content or Sexual Acts", "Sexual Content or Sexual Acts", Target(OH, "sexual")),
    ExternalLabel("PII", "Personally Identifiable Information", Target(OH), "we have no privacy subcategory"),
    ExternalLabel("Suicide & Self-Harm", "Suicide & Self-Harm", Target(OH, "self_harm")),
    ExternalLabel("Unethical Acts", "Unethical Acts", Target(OH),
                  "bias, hate, harassment, threats, defamation and extremism together"),
    ExternalLabel("Politically Sensitive Topics", "Politically Sensitive Topics", Target(MI),
                  "false claims about governments, historical events or public figures"),
    ExternalLabel("Copyright Violation", "Copyright Violation", Target(OH), "we have no IP subcategory"),
    ExternalLabel("Jailbreak", "Jailbreak (input only)", Target(JB)),
)


class Qwen3GuardLevel(StrEnum):
    """Qwen3Guard's three severity levels (the ``Safety:`` line)."""

    SAFE = "Safe"
    UNSAFE = "Unsafe"
    CONTROVERSIAL = "Controversial"


# Our subcategories that a broad external label covers, for the reverse direction only.
# Forward translation of these labels stays at subcategory None: the guard did not say which.
PARTIAL_COUNTERPARTS: Mapping[str, tuple[str, ...]] = MappingProxyType({
    "S2": ("malware", "phishing_social_engineering", "intrusion_exploitation", "credential_theft",
           "denial_of_service", "bot_automation", "fraud", "impersonation"),
    "S6": ("health",),
    "S14": ("intrusion_exploitation", "denial_of_service", "malware"),
    "harassment": ("hate",),
    "illicit": ("malware", "phishing_social_engineering", "intrusion_exploitation", "credential_theft",
                "denial_of_service", "bot_automation", "fraud"),
    "illicit/violent": ("weapons_cbrn",),
    "Violent": ("weapons_cbrn",),
    "Non-violent Illegal Acts": ("malware", "phishing_social_engineering", "intrusion_exploitation",
                                 "credential_theft", "denial_of_service", "bot_automation", "fraud"),
    "Unethical Acts": ("hate", "defamation"),
    "Politically Sensitive Topics": ("election", "historical", "fabricated_content"),
})

VOCABULARIES: Mapping[str, Mapping[str, ExternalLabel]] = MappingProxyType({
    "mlcommons": MLCOMMONS_HAZARDS,
    "openai": OPENAI_MODERATION,
    "qwen3guard": QWEN3GUARD_CATEGORIES,
})


class UnknownLabelError(KeyError):
    """A guard emitted a label that is not in the vocabulary it claims to use."""


def _normalise(label: str) -> str:
    return " ".join(label.strip().split()).casefold()


_INDEX: dict[str, dict[str, ExternalLabel]] = {
    vocab: {_normalise(code): label for code, label in table.items()} for vocab, table in VOCABULARIES.items()
}
# Qwen3Guard's README names PII in full in its policy text; accept both spellings.
_INDEX["qwen3guard"][_normalise("Personally Identifiable Information")] = QWEN3GUARD_CATEGORIES["PII"]


def lookup(vocabulary: str, label: str) -> ExternalLabel:
    """The external label ``label`` of ``vocabulary`` ("mlcommons" | "openai" | "qwen3guard").

    Matching ignores case and repeated whitespace, since generative guards are not always
    byte-exact. Raises UnknownLabelError (a KeyError) for anything else.
    """
    try:
        index = _INDEX[vocabulary]
    except KeyError as exc:
        raise ValueError(f"unknown vocabulary {vocabulary!r}; known: {sorted(VOCABULARIES)}") from exc
    try:
        return index[_normalise(label)]
    except KeyError as exc:
        raise UnknownLabelError(f"{vocabulary} has no label {label!r}") from exc


def to_taxonomy(vocabulary: str, label: str) -> Target:
    """Forward mapping: external label -> (Category, subcategory | None)."""
    return lookup(vocabulary, label).target


def counterparts(category: Category, subcategory: str | None = None) -> dict[str, list[str]]:
    """Reverse mapping: vocabulary -> external codes that cover (category, subcategory).

    A code counts when it maps exactly to this pair, when it maps to the category without a
    subcategory and lists the subcategory in PARTIAL_COUNTERPARTS, or (for subcategory None)
    when it maps anywhere into the category. An empty list means no counterpart.
    """
    check_subcategory(category, subcategory)
    found: dict[str, list[str]] = {}
    for vocab, table in VOCABULARIES.items():
        codes = []
        for code, label in table.items():
            exact = label.target == Target(category, subcategory)
            broad = subcategory is None and label.target.category is category
            covered = PARTIAL_COUNTERPARTS.get(code, ())
            wanted = SUBCATEGORIES[category] if subcategory is None else (subcategory,)
            partial = any(sub in covered for sub in wanted)
            if exact or broad or partial:
                codes.append(code)
        found[vocab] = codes
    return found


_VOCAB_TITLES = {"mlcommons": "MLCommons / Llama Guard", "openai": "OpenAI moderation", "qwen3guard": "Qwen3Guard"}


def render_mapping_markdown() -> str:
    """The generated tables of docs/taxonomy.md (deterministic: table order, then sorted)."""
    lines: list[str] = []
    for vocab, table in VOCABULARIES.items():
        lines += [f"### {_VOCAB_TITLES[vocab]} -> misuse-monitor", "",
                  "| Label | Name | Category | Subcategory | Note |", "|---|---|---|---|---|"]
        for code, label in table.items():
            sub = label.target.subcategory or "—"
            lines.append(f"| `{code}` | {label.name} | {label.target.category} | {sub} | {label.note} |")
        lines.append("")
    lines += ["### misuse-monitor -> external labels", "",
              "Exact or partial counterparts (partial: the external label is broader). "
              "\"none\" means the vocabulary has no label for it.", "",
              "| Category | Subcategory | MLCommons / Llama Guard | OpenAI moderation | Qwen3Guard |",
              "|---|---|---|---|---|"]
    for category, subs in SUBCATEGORIES.items():
        for sub in (None, *subs):
            found = counterparts(category, sub)
            cells = [", ".join(f"`{c}`" for c in found[v]) or "none" for v in VOCABULARIES]
            lines.append(f"| {category} | {sub or '(any)'} | " + " | ".join(cells) + " |")
    lines.append("")
    return "\n".join(lines)


DOC_BEGIN = "<!-- BEGIN GENERATED by detectors.taxonomy.render_mapping_markdown; do not edit -->"
DOC_END = "<!-- END GENERATED -->"


def with_generated_tables(doc: str) -> str:
    """``doc`` (the text of docs/taxonomy.md) with its generated block re-rendered.

    Regenerate with ``python -c "from detectors.taxonomy import sync_doc; sync_doc()"``.
    """
    head, sep, rest = doc.partition(DOC_BEGIN)
    _, sep_end, tail = rest.partition(DOC_END)
    if not sep or not sep_end:
        raise ValueError("docs/taxonomy.md lacks the generated-block markers")
    return f"{head}{DOC_BEGIN}\n{render_mapping_markdown()}{DOC_END}{tail}"


def sync_doc(path: str = "docs/taxonomy.md") -> None:
    from pathlib import Path

    doc = Path(path)
    doc.write_text(with_generated_tables(doc.read_text(encoding="utf-8")), encoding="utf-8")
