"""The English fast path of language detection: common English text never pays for py3langid,
and text in other Latin-script languages never takes the shortcut."""

from __future__ import annotations

import pytest

from detectors import language as L

ENGLISH = [
    "Can you help me write a cover letter for a job as a nurse? I have five years of experience.",
    "As MK made his way back to the palace, his heart was pounding in his chest and he could not stop.",
    "Here are a few concrete examples of platforms that could be built using this approach, with costs.",
]
NOT_ENGLISH = [
    "Je voudrais savoir comment faire un gâteau au chocolat pour ma famille ce week-end.",
    "Quiero saber como hacer una torta de chocolate para mi familia este fin de semana por favor.",
    "Ich möchte wissen, wie man einen Schokoladenkuchen für meine Familie backt, bitte schnell.",
    "Vorrei sapere come fare una torta al cioccolato per la mia famiglia questo fine settimana.",
    "Eu gostaria de saber como fazer um bolo de chocolate para minha familia neste fim de semana.",
]


def test_plain_english_is_decided_without_the_model(monkeypatch):
    monkeypatch.setattr(L.LanguageIdentifier, "_get", classmethod(lambda cls: pytest.fail("py3langid was called")))
    assert [L.detect_language(t) for t in ENGLISH] == ["en"] * len(ENGLISH)


@pytest.mark.parametrize("text", NOT_ENGLISH)
def test_other_languages_go_to_the_model(text):
    assert not L._plainly_english(text)
    assert L.detect_language(text) not in ("en", L.UNDETERMINED)
