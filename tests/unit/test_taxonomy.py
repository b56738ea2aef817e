from pathlib import Path

import pytest

from detectors.taxonomy import (
    MLCOMMONS_HAZARDS,
    OPENAI_MODERATION,
    QWEN3GUARD_CATEGORIES,
    SUBCATEGORIES,
    Target,
    UnknownLabelError,
    check_subcategory,
    counterparts,
    to_taxonomy,
    with_generated_tables,
)
from pipeline.schemas import Category

CY, MI, JB, OH = Category.CYBER_ABUSE, Category.MISINFORMATION, Category.JAILBREAK, Category.OTHER_HARM
DOC = Path(__file__).resolve().parents[2] / "docs" / "taxonomy.md"


def test_every_label_the_guards_emit_has_a_mapping():
    assert set(MLCOMMONS_HAZARDS) == {f"S{i}" for i in range(1, 15)}
    assert set(OPENAI_MODERATION) == {
        "harassment", "harassment/threatening", "hate", "hate/threatening", "illicit", "illicit/violent",
        "self-harm", "self-harm/intent", "self-harm/instructions", "sexual", "sexual/minors", "violence",
        "violence/graphic",
    }
    assert set(QWEN3GUARD_CATEGORIES) == {
        "Violent", "Non-violent Illegal Acts", "Sexual Content or Sexual Acts", "PII", "Suicide & Self-Harm",
        "Unethical Acts", "Politically Sensitive Topics", "Copyright Violation", "Jailbreak",
    }


@pytest.mark.parametrize(
    ("vocabulary", "label", "expected"),
    [
        ("mlcommons", "S9", Target(OH, "weapons_cbrn")),
        ("mlcommons", "s13", Target(MI, "election")),  # case-insensitive: generative guards drift
        ("mlcommons", "S5", Target(MI, "defamation")),
        ("mlcommons", "S2", Target(OH)),  # broad: no subcategory guessed
        ("mlcommons", "S14", Target(CY)),
        ("openai", "self-harm/instructions", Target(OH, "self_harm")),
        ("openai", "illicit", Target(OH)),
        ("qwen3guard", "Jailbreak", Target(JB)),
        ("qwen3guard", "politically  sensitive topics", Target(MI)),
        ("qwen3guard", "Personally Identifiable Information", Target(OH)),
    ],
)
def test_external_labels_land_in_our_taxonomy(vocabulary, label, expected):
    assert to_taxonomy(vocabulary, label) == expected


def test_unknown_labels_and_vocabularies_are_errors_not_benign():
    with pytest.raises(UnknownLabelError):
        to_taxonomy("mlcommons", "S15")
    with pytest.raises(ValueError, match="unknown vocabulary"):
        to_taxonomy("llamaguard", "S1")


def test_reverse_mapping_names_counterparts_and_gaps():
    assert counterparts(OH, "weapons_cbrn") == {"mlcommons": ["S9"], "openai": ["illicit/violent"], "qwen3guard": ["Violent"]}
    malware = counterparts(CY, "malware")
    assert "S2" in malware["mlcommons"] and malware["openai"] == ["illicit"]
    assert counterparts(JB, "dan") == {"mlcommons": [], "openai": [], "qwen3guard": []}
    assert counterparts(MI, "fabricated_content")["openai"] == []


def test_check_subcategory_rejects_foreign_subcategories():
    check_subcategory(CY, "malware")
    with pytest.raises(ValueError):
        check_subcategory(CY, "hate")
    assert all(len(set(subs)) == len(subs) for subs in SUBCATEGORIES.values())


def test_documented_tables_match_the_code():
    doc = DOC.read_text(encoding="utf-8")
    assert doc == with_generated_tables(doc), (
        "docs/taxonomy.md is stale: python -c 'from detectors.taxonomy import sync_doc; sync_doc()'"
    )
