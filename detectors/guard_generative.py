"""Bring-your-own generative guard: Llama Guard 3/4 or Qwen3Guard-Gen from a local folder.

The checkpoint's own chat template builds the moderation prompt, one per screened part of a
record (``InferenceLog.screened_parts``; prompt side: the part as a user turn; completion side:
the user side + the part as the assistant turn; see ``_tasks``), each finding naming its part, the model answers greedily in left-padded
batches, and the answer is parsed into our taxonomy through detectors.taxonomy:

- Llama Guard: ``safe`` | ``unsafe\\nS1,S10`` (MLCommons hazard codes),
- Qwen3Guard-Gen: ``Safety: Unsafe\\nCategories: Violent, Jailbreak`` (+ ``Refusal: Yes|No``
  when judging a response).

Score: the probability of the "unsafe" verdict token at the step where the verdict is
generated, renormalised over the verdict words (safe / unsafe [/ controversial]); this is the
"first token probability" Meta recommends for Llama Guard. Where that step cannot be located
the score is 1.0 for an unsafe answer (and no finding for a safe one). A finding needs both
an unsafe answer and score >= threshold: greedy decoding decides the categories, so a
threshold below 0.5 cannot add findings, only one above 0.5 can remove them.

Unreadable answers are never read as "safe". With ``on_unparseable="raise"`` (default) the
whole batch is screened first, then :class:`GuardBatchError` is raised carrying the findings
of every readable record (``partial``) and each failure with the raw answer, so a caller can
keep the good results and dead-letter the rest. ``"skip"`` logs the raw answer, counts it in
``stats.unparseable`` and emits no finding for that side. A start-up self-check (on by
default) moderates one benign prompt and fails ``create`` when the answer is unreadable,
which catches a wrong ``flavor`` before any traffic is screened.

Options (``config.options``; each may be namespaced ``llm_guard.<key>``):
``flavor`` (llama_guard | qwen3guard, required), ``sides`` (default ``prompt,completion``),
``threshold`` (0.5), ``max_new_tokens`` (llama_guard 10, qwen3guard 24), ``max_chars`` per
message (8000, head and tail kept), ``controversial`` (safe | unsafe; Qwen3Guard loose or
strict mode, default safe), ``content_format`` (auto | text | parts; auto picks parts for
Llama Guard 4, whose template wants OpenAI-style content parts), ``label_map`` (JSON label -> "category[/subcategory]" or null, for custom categories),
``on_unparseable`` (raise | skip), ``self_check`` (true | false), ``dtype`` (auto | float32 |
bfloat16 | float16), ``revision`` (pinned name recorded in findings), ``model_dir``.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, Self

from detectors._guard_common import (
    DetectorOptions,
    GuardConfigError,
    apply_threads,
    checkpoint_fingerprint,
    evidence,
    head_tail,
    load_pretrained,
    load_tokenizer,
    parts_to_screen,
    require_complete_load,
    resolve_device,
    strongest_per_target,
)
from detectors.base import Detector, DetectorConfig, PartialDetectionError
from detectors.taxonomy import Target, UnknownLabelError, lookup
from pipeline.schemas import Category, Finding, InferenceLog, ScreenedPart, Side

log = logging.getLogger(__name__)

DEFAULT_THRESHOLD = 0.5
DEFAULT_MAX_CHARS = 8000


class GuardLevel(StrEnum):
    SAFE = "safe"
    UNSAFE = "unsafe"
    CONTROVERSIAL = "controversial"


@dataclass(frozen=True)
class GuardAnswer:
    """A parsed guard answer; ``labels`` are the guard's own category codes, in its order."""

    level: GuardLevel
    labels: tuple[str, ...] = ()
    refusal: bool | None = None  # Qwen3Guard, response side only


class GuardOutputError(ValueError):
    """The guard's answer does not follow its output format."""

    def __init__(self, raw: str, reason: str) -> None:
        # The answer is not in the message: it is logged, and a guard may echo the user's text
        # (personal data). ``raw`` keeps it for a debugger or a test.
        super().__init__(f"{reason} ({len(raw)} characters)")
        self.raw = raw
        self.reason = reason


@dataclass(frozen=True)
class GuardFailure:
    index: int  # position of the record in the batch passed to detect()
    side: Side
    error: GuardOutputError
    location: str | None = None  # the part judged, e.g. "messages[2].content"


class GuardBatchError(PartialDetectionError):
    """Some answers in a batch were unreadable; ``partial`` holds the findings of all records
    (records with failures have only the findings of their readable sides)."""

    def __init__(self, failures: list[GuardFailure], partial: list[list[Finding]]) -> None:
        super().__init__(
            f"{len(failures)} unreadable guard answer(s) in a batch of {len(partial)}; first: {failures[0].error}",
            partial,
            failures,
        )
        self.failures: list[GuardFailure] = failures


def parse_llama_guard(raw: str) -> GuardAnswer:
    """``safe`` or ``unsafe`` on the first non-empty line, comma-separated codes on the next."""
    lines = [line.strip() for line in raw.strip().splitlines() if line.strip()]
    if not lines:
        raise GuardOutputError(raw, "empty answer")
    head = lines[0].lower()
    if head == "safe":
        return GuardAnswer(GuardLevel.SAFE)
    if head != "unsafe":
        raise GuardOutputError(raw, "first line is neither 'safe' nor 'unsafe'")
    # Codes outside S1-S14 (custom policies) are kept; the taxonomy lookup decides.
    labels = tuple(code.strip().upper() for code in lines[1].split(",") if code.strip()) if len(lines) > 1 else ()
    return GuardAnswer(GuardLevel.UNSAFE, labels)


# What a guard writes where its labels go is generated text: a guard that echoes the prompt, or
# one a prompt injection steers, can write the user's own words there ("S1, mail
# john.smith@acme-bank.com"). A label we do not know is shown in evidence and the log only when
# it is shaped like a policy code (S15, O3: a custom policy's, kept so it can be mapped with
# ``label_map``); otherwise as UNSHOWN_LABEL. Evidence is otherwise redacted text, and it goes to
# the verdicts topic, the lake and PostgreSQL (a privacy review, 2026-12-06).
_CODE_SHAPED = re.compile(r"[A-Z]{1,4}[0-9]{1,3}")
UNSHOWN_LABEL = "?"

_QWEN_SAFETY = re.compile(r"Safety:\s*(Safe|Unsafe|Controversial)\b", re.IGNORECASE)
_QWEN_CATEGORIES = re.compile(r"Categories:\s*(.*)", re.IGNORECASE)
_QWEN_REFUSAL = re.compile(r"Refusal:\s*(Yes|No)\b", re.IGNORECASE)


def parse_qwen3guard(raw: str) -> GuardAnswer:
    """``Safety: <level>``, then ``Categories: a, b`` (or None), then optionally ``Refusal: Yes|No``."""
    safety = _QWEN_SAFETY.search(raw)
    if safety is None:
        raise GuardOutputError(raw, "no 'Safety: Safe|Unsafe|Controversial' line")
    level = GuardLevel(safety.group(1).lower())
    labels: tuple[str, ...] = ()
    categories = _QWEN_CATEGORIES.search(raw, safety.end())
    if categories is not None:
        names = [name.strip() for name in categories.group(1).split(",")]
        labels = tuple(name for name in names if name and name.lower() != "none")
    refusal = _QWEN_REFUSAL.search(raw, safety.end())
    return GuardAnswer(level, labels, None if refusal is None else refusal.group(1).lower() == "yes")


class GuardFlavor(StrEnum):
    LLAMA_GUARD = "llama_guard"
    QWEN3GUARD = "qwen3guard"


@dataclass(frozen=True)
class FlavorSpec:
    parse: Callable[[str], GuardAnswer]
    vocabulary: str  # detectors.taxonomy vocabulary of its category labels
    verdict_after: str  # text that precedes the verdict word in the answer
    words: dict[GuardLevel, str]  # verdict word per level, as the model writes it
    max_new_tokens: int


FLAVORS: dict[GuardFlavor, FlavorSpec] = {
    # "unsafe\nS1,S2,S3" is ~8 tokens with Llama 3's tokenizer; 10 leaves room for 4+ codes
    # plus end of turn.
    GuardFlavor.LLAMA_GUARD: FlavorSpec(
        parse_llama_guard, "mlcommons", "", {GuardLevel.SAFE: "safe", GuardLevel.UNSAFE: "unsafe"}, 10
    ),
    GuardFlavor.QWEN3GUARD: FlavorSpec(
        parse_qwen3guard,
        "qwen3guard",
        "Safety:",
        {GuardLevel.SAFE: "Safe", GuardLevel.UNSAFE: "Unsafe", GuardLevel.CONTROVERSIAL: "Controversial"},
        24,
    ),
}


@dataclass(frozen=True)
class Generation:
    """One moderation call: the raw answer and the unsafe probability (None: not locatable)."""

    raw: str
    unsafe_probability: float | None


@dataclass
class GuardStats:
    answers: int = 0
    unparseable: int = 0
    unknown_labels: int = 0


@dataclass(frozen=True)
class _Task:
    index: int
    side: Side
    text: str  # the text judged on this side (evidence comes from it)
    messages: list[dict[str, Any]] = field(hash=False)
    part: ScreenedPart | None = None  # the record part judged (named in findings)


class GenerativeGuardDetector(Detector):
    name = "llm_guard"
    option_keys = (
        "model_dir", "flavor", "dtype", "sides", "threshold", "max_new_tokens", "max_chars", "controversial",
        "content_format", "label_map", "on_unparseable", "self_check", "revision",
    )
    version = "1"

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        flavor: GuardFlavor,
        *,
        sides: tuple[Side, ...] = (Side.PROMPT, Side.COMPLETION),
        threshold: float = DEFAULT_THRESHOLD,
        batch_size: int = 8,
        max_new_tokens: int | None = None,
        max_chars: int = DEFAULT_MAX_CHARS,
        controversial_is_unsafe: bool = False,
        content_format: str = "text",
        label_map: dict[str, Target | None] | None = None,
        raise_on_unparseable: bool = True,
        detector_version: str | None = None,
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.flavor = flavor
        self.spec = FLAVORS[flavor]
        self.sides = sides
        self.threshold = threshold
        self.batch_size = batch_size
        self.max_new_tokens = max_new_tokens or self.spec.max_new_tokens
        self.max_chars = max_chars
        self.controversial_is_unsafe = controversial_is_unsafe
        self.content_format = content_format
        self.label_map = {k.casefold(): v for k, v in (label_map or {}).items()}
        self.raise_on_unparseable = raise_on_unparseable
        self.detector_version = detector_version or self.version
        self.stats = GuardStats()
        self._verdict_token_ids = self._verdict_candidates()
        self._eos_ids = self._end_ids()

    @classmethod
    def create(cls, config: DetectorConfig) -> Self:
        opts = DetectorOptions(cls.name, config)
        model_dir = opts.model_dir()
        if not opts.get("flavor"):
            raise GuardConfigError(f"{cls.name}: option flavor is required (llama_guard | qwen3guard)")
        flavor = GuardFlavor(opts.choice("flavor", "", tuple(GuardFlavor)))
        apply_threads(config.threads)
        model, tokenizer = load_causal_guard(model_dir, config.device, opts.choice(
            "dtype", "auto", ("auto", "float32", "bfloat16", "float16")))
        detector = cls(
            model,
            tokenizer,
            flavor,
            sides=opts.sides("prompt,completion"),
            threshold=opts.probability("threshold", DEFAULT_THRESHOLD),
            batch_size=config.batch_size,
            max_new_tokens=opts.integer("max_new_tokens", FLAVORS[flavor].max_new_tokens),
            max_chars=opts.integer("max_chars", DEFAULT_MAX_CHARS, minimum=100),
            controversial_is_unsafe=opts.choice("controversial", "safe", ("safe", "unsafe")) == "unsafe",
            content_format=_content_format(opts.choice("content_format", "auto", ("auto", "text", "parts")), model),
            label_map=opts.label_map(),
            raise_on_unparseable=opts.choice("on_unparseable", "raise", ("raise", "skip")) == "raise",
            detector_version=f"{cls.version}+{opts.get('revision') or checkpoint_fingerprint(model_dir)}",
        )
        if opts.choice("self_check", "true", ("true", "false")) == "true":
            detector.self_check()
        return detector

    def self_check(self) -> None:
        """Runs once at create(): a benign prompt must get a readable answer."""
        raw = self.generate([[{"role": "user", "content": self._content("What is the capital of France?")}]])[0].raw
        try:
            self.spec.parse(raw)
        except GuardOutputError as exc:
            raise GuardConfigError(
                f"{self.name}: the checkpoint's answer is not {self.flavor} output; wrong flavor or not a guard model"
            ) from exc

    # -- generation -------------------------------------------------------------------

    def generate(self, conversations: Sequence[list[dict[str, Any]]]) -> list[Generation]:
        """Greedy answers for chat conversations, in input order, batched by prompt length."""
        import torch

        rendered = [
            self.tokenizer.apply_chat_template(conv, tokenize=False, add_generation_prompt=True)
            for conv in conversations
        ]
        # Identical moderation prompts (replayed traffic, shared system prompts) run once.
        prompts = list(dict.fromkeys(rendered))
        # The template already wrote BOS where the model wants it.
        encoded = self.tokenizer(prompts, add_special_tokens=False)["input_ids"]
        order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))
        by_prompt: dict[str, Generation] = {}
        for start in range(0, len(order), self.batch_size):
            chunk = order[start : start + self.batch_size]
            batch = self.tokenizer.pad({"input_ids": [encoded[i] for i in chunk]}, return_tensors="pt")
            batch = {k: v.to(self.model.device) for k, v in batch.items()}
            with torch.inference_mode():
                out = self.model.generate(
                    **batch,
                    generation_config=self._generation_config(),
                )
            new_tokens = out.sequences[:, batch["input_ids"].shape[1] :].tolist()
            for row, index in enumerate(chunk):
                ids = self._until_eos(new_tokens[row])
                # Views, not a stacked copy: batch x steps x vocab floats would not fit for
                # 150k-token vocabularies; only the verdict step is ever read.
                row_logits = [step[row] for step in out.logits]
                by_prompt[prompts[index]] = Generation(
                    raw=self.tokenizer.decode(ids, skip_special_tokens=True),
                    unsafe_probability=self._unsafe_probability(ids, row_logits),
                )
        self.stats.answers += len(encoded)
        return [by_prompt[p] for p in rendered]

    def _generation_config(self) -> Any:
        from transformers import GenerationConfig

        # A fresh config: checkpoints often ship sampling defaults (temperature, top_p).
        return GenerationConfig(
            max_new_tokens=self.max_new_tokens,
            do_sample=False,
            eos_token_id=sorted(self._eos_ids),
            pad_token_id=self.tokenizer.pad_token_id,
            return_dict_in_generate=True,
            output_logits=True,  # raw logits: the verdict probability is read from them
        )

    def _end_ids(self) -> set[int]:
        configured = getattr(self.model.generation_config, "eos_token_id", None)
        ids = set(configured if isinstance(configured, list) else [configured] if configured is not None else [])
        if self.tokenizer.eos_token_id is not None:
            ids.add(self.tokenizer.eos_token_id)
        return ids

    def _until_eos(self, ids: list[int]) -> list[int]:
        for pos, token in enumerate(ids):
            if token in self._eos_ids:
                return ids[:pos]
        return ids

    def _verdict_candidates(self) -> dict[GuardLevel, set[int]]:
        """First token ids of each verdict word, as spelled after a space or a newline."""
        first: dict[GuardLevel, set[int]] = {}
        for level, word in self.spec.words.items():
            spellings = {word, word.lower(), word.capitalize()}
            ids = set()
            for spelling in spellings:
                for variant in (spelling, " " + spelling):
                    tokens = self.tokenizer(variant, add_special_tokens=False)["input_ids"]
                    if tokens:
                        ids.add(tokens[0])
            first[level] = ids
        # A token shared by two words ("S" for Safe and Sensitive...) says nothing; drop it.
        for level, ids in first.items():
            others = set().union(*(v for k, v in first.items() if k is not level))
            first[level] = ids - others
        return first

    def _unsafe_probability(self, ids: list[int], logits: Sequence[Any]) -> float | None:
        """P(unsafe verdict) at the step that writes the verdict word; None if not found."""
        step = self._verdict_step(ids)
        if step is None or not self._verdict_token_ids.get(GuardLevel.UNSAFE):
            return None
        candidates = self._verdict_token_ids
        chosen = ids[step]
        if not any(chosen in tokens for tokens in candidates.values()):
            # The model spelled the verdict with a token our spellings missed; without it the
            # score would ignore the model's own choice, so attribute it or give up.
            piece = self.tokenizer.decode([chosen], skip_special_tokens=True).strip().casefold()
            owners = [lvl for lvl, word in self.spec.words.items() if piece and word.casefold().startswith(piece)]
            if len(owners) != 1:
                return None
            candidates = {lvl: tokens | {chosen} if lvl is owners[0] else tokens for lvl, tokens in candidates.items()}
        probs = logits[step].float().softmax(dim=-1)
        mass = {level: float(probs[sorted(tokens)].sum()) if tokens else 0.0
                for level, tokens in candidates.items()}
        total = sum(mass.values())
        if total <= 0.0:
            return None
        flagged = mass[GuardLevel.UNSAFE]
        if self.controversial_is_unsafe:
            flagged += mass.get(GuardLevel.CONTROVERSIAL, 0.0)
        return min(1.0, flagged / total)

    def _verdict_step(self, ids: list[int]) -> int | None:
        for step, token in enumerate(ids):
            if not self.tokenizer.decode([token], skip_special_tokens=True).strip():
                continue
            before = self.tokenizer.decode(ids[:step], skip_special_tokens=True)
            if self.spec.verdict_after and self.spec.verdict_after not in before:
                continue
            return step
        return None

    # -- detection --------------------------------------------------------------------

    def detect(self, records: Sequence[InferenceLog]) -> list[list[Finding]]:
        tasks = self._tasks(records)
        generations = self.generate([t.messages for t in tasks]) if tasks else []
        results: list[list[Finding]] = [[] for _ in records]
        failures: list[GuardFailure] = []
        for task, gen in zip(tasks, generations, strict=True):
            try:
                answer = self.spec.parse(gen.raw)
            except GuardOutputError as exc:
                failures.append(GuardFailure(task.index, task.side, exc, task.part.location if task.part else None))
                continue
            results[task.index].extend(self._findings(task, answer, gen.unsafe_probability))
        results = [strongest_per_target(found) for found in results]
        if failures:
            self.stats.unparseable += len(failures)
            if self.raise_on_unparseable:
                raise GuardBatchError(failures, results)
            for failure in failures:
                log.warning("%s: unreadable answer for record %d (%s): %s",
                            self.name, failure.index, failure.side, failure.error)
        return results

    def _content(self, text: str) -> str | list[dict[str, str]]:
        text = head_tail(text, self.max_chars)
        return [{"type": "text", "text": text}] if self.content_format == "parts" else text

    def _tasks(self, records: Sequence[InferenceLog]) -> list[_Task]:
        """One moderation call per part of ``parts_to_screen``. A prompt-side part (system
        prompt, each user or assistant turn the client sent, tool calls and results) is judged
        as a user turn of its own; a completion-side part (completion, reasoning, tool calls
        of this response) as the assistant turn answering the user side (``prompt_text``).
        Guard templates accept strictly alternating user/assistant turns, so that is the
        conversation each call gets. Identical calls in a batch run once (``generate``)."""
        tasks: list[_Task] = []
        for index, record in enumerate(records):
            user = {"role": "user", "content": self._content(record.prompt_text)}
            for part in parts_to_screen(record, self.sides):
                if part.side is Side.PROMPT:
                    messages = [{"role": "user", "content": self._content(part.text)}]
                else:
                    messages = [user, {"role": "assistant", "content": self._content(part.text)}]
                tasks.append(_Task(index, part.side, part.text, messages, part))
        return tasks

    def _flags(self, answer: GuardAnswer) -> bool:
        if answer.level is GuardLevel.UNSAFE:
            return True
        return answer.level is GuardLevel.CONTROVERSIAL and self.controversial_is_unsafe

    def _findings(self, task: _Task, answer: GuardAnswer, probability: float | None) -> list[Finding]:
        # Safety decides. A Qwen3Guard "Refusal: Yes" comes with "Safety: Safe" for a clean
        # refusal (no finding, so complied=false); an unsafe answer that also says it refused
        # still carried harmful content, so it stays a completion finding.
        if not self._flags(answer):
            return []
        score = 1.0 if probability is None else probability
        if score < self.threshold:
            return []
        targets: dict[Target, None] = {}
        shown: list[str] = []
        for label in answer.labels:
            target, known = self._target(label)
            targets[target] = None
            shown.append(label if known or _CODE_SHAPED.fullmatch(label) else UNSHOWN_LABEL)
        if not answer.labels:
            targets[Target(Category.OTHER_HARM)] = None  # unsafe without a category: still flagged
        return [
            Finding(
                category=t.category,
                subcategory=t.subcategory,
                side=task.side,
                score=round(score, 6),
                detector=self.name,
                detector_version=self.detector_version,
                evidence=evidence(task.text, tuple(shown)),
                part=task.part.kind if task.part else None,
                location=task.part.location if task.part else None,
            )
            for t in targets
        ]

    def _target(self, label: str) -> tuple[Target, bool]:
        """The label's category, and whether the label is one we know (the label map or the
        published vocabulary)."""
        key = label.casefold()
        if key in self.label_map:
            return self.label_map[key], True
        try:
            return lookup(self.spec.vocabulary, label).target, True
        except UnknownLabelError:
            # A label outside the published vocabulary (custom policy, new model version) is
            # still an unsafe verdict: flag it without a subcategory rather than drop it. It is
            # logged (and shown in evidence) only when shaped like a policy code: see _CODE_SHAPED.
            self.stats.unknown_labels += 1
            named = repr(label) if _CODE_SHAPED.fullmatch(label) else f"of {len(label)} characters (not shown)"
            log.warning("%s: unknown %s label %s mapped to other_harm", self.name, self.flavor, named)
            return Target(Category.OTHER_HARM), False

    def close(self) -> None:
        self.model = None
        try:
            import torch

            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        except ImportError:  # pragma: no cover - torch is a hard dependency of this detector
            pass


def _content_format(requested: str, model: Any) -> str:
    """Llama Guard 4's template reads OpenAI-style content parts; the others read strings."""
    if requested != "auto":
        return requested
    return "parts" if str(getattr(model.config, "model_type", "")).startswith("llama4") else "text"


def load_causal_guard(model_dir: Path, device: str, dtype: str = "auto") -> tuple[Any, Any]:
    """Tokenizer (left padding) and model in eval mode on the resolved device, offline."""
    import torch
    from transformers import AutoModelForCausalLM

    target = resolve_device(device)
    tokenizer = load_tokenizer(model_dir)
    if not getattr(tokenizer, "chat_template", None):
        raise GuardConfigError(f"{model_dir}: the tokenizer has no chat_template; a guard model needs one")
    tokenizer.padding_side = "left"  # decoder-only generation continues from the right edge
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    if dtype == "auto":
        torch_dtype = torch.bfloat16 if target.type == "cuda" and torch.cuda.is_bf16_supported() else torch.float32
    else:
        torch_dtype = getattr(torch, dtype)
    # Llama Guard 4 is saved as Llama4ForConditionalGeneration; the causal-LM class loads
    # just its text stack (the vision weights are reported unexpected and skipped).
    model, info = load_pretrained(
        model_dir, AutoModelForCausalLM, "causal language model", dtype=torch_dtype, output_loading_info=True
    )
    require_complete_load(model_dir, info)
    return model.to(target).eval(), tokenizer
