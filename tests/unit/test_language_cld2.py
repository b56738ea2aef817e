"""Language detection on the stream's hot path: right code for the languages our users' models
serve, ``und`` for text too short or too code-like to tell."""

from __future__ import annotations

import pytest

from detectors import language as L

CASES = [
    ("Can you help me write a cover letter for a job as a nurse? I have five years of experience.", "en"),
    ("Je voudrais savoir comment faire un gâteau au chocolat pour ma famille ce week-end.", "fr"),
    ("Quiero saber como hacer una torta de chocolate para mi familia este fin de semana por favor.", "es"),
    ("Ich möchte wissen, wie man einen Schokoladenkuchen für meine Familie backt, bitte schnell.", "de"),
    ("Vorrei sapere come fare una torta al cioccolato per la mia famiglia questo fine settimana.", "it"),
    ("Напишите, пожалуйста, короткое письмо коллеге о переносе встречи на следующую неделю.", "ru"),
    ("请帮我写一封简短的邮件，告诉同事会议改到下周举行，并感谢他的理解。", "zh"),
    ("מה השעה עכשיו בתל אביב ומה מזג האוויר צפוי להיות מחר בבוקר", "he"),
]


@pytest.mark.parametrize(("text", "code"), CASES)
def test_language_of_a_sentence(text, code):
    assert L.detect_language(text) == code


@pytest.mark.parametrize("text", ["ok", "42", "x = f(y) + 3;", "", "👍👍👍"])
def test_too_little_text_is_undetermined(text):
    assert L.detect_language(text) == L.UNDETERMINED


def test_a_lone_surrogate_is_undetermined_not_an_error():
    """Regression (hostile review): CLD2 reads UTF-8, and a lone surrogate cannot be encoded, so
    detection raised UnicodeEncodeError. Decode rejects such text before the stream's detectors,
    but language detection must never raise for a library caller either."""
    text = "Can you help me write a cover letter for a job as a nurse? \ud800 I have five years."
    assert L.detect_language(text) == L.UNDETERMINED
    assert L.language_chunks([text]) == {}


def test_non_english_text_is_unscreened_for_an_english_only_reader():
    class EnglishOnly:
        languages = ("en",)

    coverage = L.LanguageCoverage.of([EnglishOnly()])
    coverage.observe("prompt", CASES[1][0])
    coverage.observe("prompt", CASES[0][0])
    screened, unscreened = coverage.take()
    assert unscreened == {("prompt", "fr"): 1} and screened == {("prompt", "en"): 1}
