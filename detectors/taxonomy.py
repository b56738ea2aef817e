"""The misuse taxonomy: categories (pipeline.schemas.Category) and their subcategories.

The mapping to MLCommons hazards, OpenAI moderation and Qwen3Guard categories is
documented in docs/taxonomy.md and encoded in TAXONOMY below so guard-model adapters
can translate their labels.
"""

from __future__ import annotations

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
