"""Transparent pattern rules: a baseline a reviewer can read, with evidence spans.

Every rule is a regular expression with a category, subcategory, side and a fixed score.
The scores are not calibrated probabilities learnt from data; they are pinned by hand
(0.6 for single-phrase rules, 0.8 for unambiguous ones) so the rules can run next to the
ML classifier and be told apart in verdicts (``detector == "rules"``).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import chain

from detectors.base import Detector
from detectors.normalize import Reading, disguised, folded_reading, iter_all, reading_evidence
from pipeline.schemas import Category, Finding, InferenceLog, ScreenedPart, Side, Signal


@dataclass(frozen=True)
class Rule:
    category: Category
    subcategory: str | None
    side: Side
    score: float
    pattern: re.Pattern[str]


def _rx(*alternatives: str) -> re.Pattern[str]:
    return re.compile("|".join(f"(?:{a})" for a in alternatives), re.IGNORECASE)


P, C = Side.PROMPT, Side.COMPLETION
CY, MI, JB, OH = Category.CYBER_ABUSE, Category.MISINFORMATION, Category.JAILBREAK, Category.OTHER_HARM

RULES: tuple[Rule, ...] = (
    # cyber abuse: asking for it
    Rule(CY, "malware", P, 0.8, _rx(
        r"\b(write|create|build|code|develop|make)\b[^.?!\n]{0,40}\b(ransomware|keylogger|malware|trojan|rootkit|botnet|computer virus|worm that|spyware|backdoor)",
        r"\b(encrypt|lock)s? (all )?(the |their )?(victim'?s? )?files[^.?!\n]{0,40}\b(ransom|bitcoin|payment)",
        r"\bevade (antivirus|av|edr|detection)\b",
    )),
    Rule(CY, "phishing_social_engineering", P, 0.8, _rx(
        r"\b(write|draft|create|compose)\b[^.?!\n]{0,40}\bphishing\b",
        r"\b(email|message|text|sms)\b[^.?!\n]{0,60}\b(trick|convince|persuade|lure)s?\b[^.?!\n]{0,60}\b(password|credentials|login|bank details|social security)",
        r"\bfake (login|sign[- ]in) page\b",
    )),
    Rule(CY, "intrusion_exploitation", P, 0.7, _rx(
        r"\b(hack|break) into\b[^.?!\n]{0,50}\b(account|network|server|database|system|email|computer)",
        r"\b(exploit|exploiting)\b[^.?!\n]{0,40}\b(vulnerabilit|cve-\d{4}|zero[- ]day)",
        r"\bsql injection\b[^.?!\n]{0,40}\b(steal|dump|extract|bypass)",
        r"\bgain (unauthori[sz]ed|root|admin) access\b",
    )),
    Rule(CY, "credential_theft", P, 0.8, _rx(
        r"\b(steal|harvest|grab|dump|crack)(s|ing)?\b[^.?!\n]{0,40}\b(passwords?|credentials|cookies|session tokens?|credit card (numbers|details))",
        r"\bcredential[- ]stuffing\b",
    )),
    Rule(CY, "denial_of_service", P, 0.8, _rx(
        r"\b(ddos|denial[- ]of[- ]service)\b[^.?!\n]{0,40}\b(attack|script|tool|take down|knock)",
        r"\b(take|knock|bring) (down|offline)\b[^.?!\n]{0,30}\b(website|server|network)",
    )),
    Rule(CY, "bot_automation", P, 0.6, _rx(
        r"\b(create|generate|automate|register)\b[^.?!\n]{0,30}\b(thousands|hundreds|bulk|mass)\b[^.?!\n]{0,30}\b(fake )?(accounts|reviews|profiles)",
        r"\bbypass (a |the )?captcha\b",
    )),
    # misinformation
    Rule(MI, "fabricated_content", P, 0.7, _rx(
        r"\b(write|create|generate|draft)\b[^.?!\n]{0,40}\bfake news\b",
        r"\b(write|create|generate|draft)\b[^.?!\n]{0,40}\b(article|post|story|tweet|report)s?\b[^.?!\n]{0,80}\b(falsely|false claims?|fabricated|made[- ]up|hoax|conspiracy)",
        r"\b(convince|persuade) (people|readers|the public)\b[^.?!\n]{0,60}\b(is a hoax|never happened|is fake)",
    )),
    Rule(MI, "health", P, 0.7, _rx(
        r"\b(vaccines?|vaccination)\b[^.?!\n]{0,40}\b(cause|causes) (autism|infertility|cancer)",
        r"\b(article|post|claim)\b[^.?!\n]{0,60}\b(cures? (cancer|covid|diabetes)|miracle cure)",
    )),
    Rule(MI, "election", P, 0.7, _rx(
        r"\b(election|vote|votes|ballots?)\b[^.?!\n]{0,40}\b(was|were|is) (rigged|stolen)\b",
        r"\b(tell|convince) (voters|people)\b[^.?!\n]{0,40}\b(vote (on|by) (the )?wrong|polling (place|station)s? (are|is) closed)",
    )),
    Rule(MI, "defamation", P, 0.6, _rx(
        r"\b(write|post|spread)\b[^.?!\n]{0,40}\b(rumou?rs?|lies|false (story|allegations?))\b[^.?!\n]{0,40}\babout\b",
    )),
    Rule(MI, "impersonation", P, 0.6, _rx(
        r"\b(pretend|pose|posing|impersonat\w*)\b[^.?!\n]{0,30}\b(to be |as )?(a |the )?(doctor|official|government|bank|ceo|police|journalist)",
    )),
    # jailbreak and prompt injection
    Rule(JB, "dan", P, 0.8, _rx(r"\bDAN\b[^.\n]{0,60}\b(do anything now|jailbr)", r"\bdo anything now\b", r"\bjailbreak(ed)? mode\b")),
    Rule(JB, "prompt_injection", P, 0.8, _rx(
        r"\b(ignore|disregard|forget)\b[^.?!\n]{0,20}\b(all |any |the )?(previous|prior|above|earlier)\b[^.?!\n]{0,20}\b(instructions|prompts?|rules|directions)",
        r"\b(reveal|print|show|repeat)\b[^.?!\n]{0,20}\b(your|the) (system prompt|hidden instructions|initial instructions)",
    )),
    Rule(JB, "role_play", P, 0.6, _rx(
        r"\b(you are|act as|pretend to be|from now on you are)\b[^.?!\n]{0,60}\b(no (ethical|moral) (guidelines|restrictions|limits)|unfiltered|uncensored|without (any )?restrictions|no rules)",
        r"\b(developer|god|evil) mode\b",
    )),
    # other harm
    Rule(OH, "weapons_cbrn", P, 0.8, _rx(
        r"\b(make|build|synthesi[sz]e|produce|assemble)\b[^.?!\n]{0,40}\b(bomb|explosive|nerve agent|sarin|ricin|anthrax|bioweapon|chemical weapon|pipe bomb|napalm)",
    )),
    Rule(OH, "violent_crime", P, 0.6, _rx(r"\b(how (do i|to|can i)|best way to)\b[^.?!\n]{0,20}\b(murder|kill (someone|a person|my)|poison (someone|my|a person))")),
    Rule(OH, "fraud", P, 0.6, _rx(
        r"\b(launder|laundering) money\b", r"\b(counterfeit|fake) (money|bills|currency|ids?|passports?)\b",
        r"\bcommit (insurance |tax |credit card )?fraud\b",
    )),
    Rule(OH, "self_harm", P, 0.6, _rx(r"\b(how (to|do i|can i)|best way to)\b[^.?!\n]{0,20}\b(kill myself|commit suicide|end my life)")),
    # completion side: the model produced harmful content
    Rule(CY, "malware", C, 0.7, _rx(
        r"\b(import (pynput|ctypes|socket)[\s\S]{0,400}(keylog|on_press|send|exfil))",
        r"\bencrypt(ing)?\b[^.\n]{0,40}\bfiles?\b[^.\n]{0,80}\b(ransom note|bitcoin (wallet|address))",
    )),
    Rule(CY, "phishing_social_engineering", C, 0.7, _rx(
        r"\b(dear (customer|user|valued)|your account (has been|will be) (suspended|locked|closed))\b[\s\S]{0,300}\b(click (here|the link|below)|verify your (account|identity|password))",
    )),
    Rule(OH, "weapons_cbrn", C, 0.7, _rx(r"\b(step \d|first,?)\b[^.\n]{0,80}\b(detonator|oxidi[sz]er|fuse|shrapnel|nerve agent|precursor)")),
)

# Refusals on the completion side are never findings; this keeps rules like the
# phishing template from matching a refusal that quotes the request.
_REFUSAL = _rx(
    r"^\s*(i'?m sorry|i am sorry|sorry,|i can(no|')t|i cannot|i won'?t|i will not|i'?m not able|i am not able|i'?m unable|as an ai)",
)


class RulesDetector(Detector):
    """Every rule runs on every screened part of a record (``InferenceLog.screened_parts``)
    and on each part's normalised/decoded readings (detectors/normalize.py), and on its letters
    written without accents (``folded_reading``). A category that only matched a transformed
    reading carries the ``obfuscation`` signal."""

    name = "rules"
    version = "rules-2026.12.2"  # .2: the accent-folded reading (docs/obfuscation-eval.md)

    def detect(self, records: Sequence[InferenceLog]) -> list[list[Finding]]:
        return [self._detect_one(r) for r in records]

    def _detect_one(self, record: InferenceLog) -> list[Finding]:
        # (category, side) -> the strongest match; evidence is cut for it only (redaction
        # runs a NER model per snippet).
        best: dict[tuple[Category, Side], _Match] = {}
        hidden: set[tuple[Category, Side]] = set()  # matched once normalised or decoded
        for part in record.screened_parts():
            if part.side is Side.COMPLETION and _REFUSAL.search(part.text):
                continue
            folded = folded_reading(part.text)  # English written with accents (ráñsömwárë)
            for reading in chain(iter_all(part.text), (folded,) if folded is not None else ()):
                for rule in RULES:
                    if rule.side is not part.side:
                        continue
                    match = rule.pattern.search(reading.text)
                    if match is None:
                        continue
                    key = (rule.category, rule.side)
                    # Folded accents hide nothing in Italian or French text that matched as written.
                    if disguised(reading) and not (reading is folded and key in best):
                        hidden.add(key)
                    held = best.get(key)
                    if held is None or rule.score > held.rule.score:  # the earlier part at equal scores
                        best[key] = _Match(rule, part, reading, match.start(), match.end())
        return [
            Finding(
                category=m.rule.category,
                subcategory=m.rule.subcategory,
                side=m.rule.side,
                score=m.rule.score,
                detector=self.name,
                detector_version=self.version,
                evidence=reading_evidence(m.part.text, m.reading, m.start, m.end),
                part=m.part.kind,
                location=m.part.location,
                signals=[Signal.OBFUSCATION] if key in hidden else [],
            )
            for key, m in best.items()
        ]


@dataclass(frozen=True)
class _Match:
    rule: Rule
    part: ScreenedPart
    reading: Reading
    start: int
    end: int
