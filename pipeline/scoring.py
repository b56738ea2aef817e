"""Detectors + verdict policy over a batch: shared by stream, classify and Spark backfill.

In: decoded inference logs. Out: one misuse-verdict/v1 per log, or a :class:`RecordError` for a
log that no detector could judge. A detector exception is first assumed to be the fault of one
record: the batch is split in halves until the failing records are isolated, so one poison
record never stops the others. If the failure is not tied to records (a known-good canary fails
too: a lost GPU, a corrupt artifact) :class:`DetectorFailure` is raised instead, so the runner
stops without committing rather than dead-lettering healthy traffic.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from detectors.base import Detector, PartialDetectionError, pinned_version
from detectors.language import LanguageCoverage
from detectors.registry import build
from pipeline import redact
from pipeline.decode import DecodeError, decode_log
from pipeline.metrics import PipelineMetrics
from pipeline.schemas import Finding, InferenceLog, MisuseVerdict, ScreenedPart, Signal
from pipeline.settings import Settings
from pipeline.trusted import TrustedPrompts
from pipeline.verdicts import Pseudonymizer, build_verdict

log = logging.getLogger(__name__)

# A record every detector must be able to judge; used only to tell a poison record from a broken detector.
CANARY = InferenceLog.model_validate(
    {
        "schema": "inference-log/v1",
        "request_id": "mm-canary",
        "timestamp": datetime(2026, 1, 1, tzinfo=UTC),
        "model": "canary",
        "prompt": "What is the capital of France?",
        "completion": "Paris.",
    }
)


# Scorer.warm_up's records: simulated traffic (fixed, so every start warms up alike), and two
# benign requests the routed detector sends to its multilingual model.
WARM_UP_SEED = 20261203
WARM_UP_END = datetime(2026, 12, 3, tzinfo=UTC)
WARM_UP_TEXTS = (
    "Bonjour, pouvez-vous m'expliquer comment fonctionne la photosynthèse chez les plantes vertes ?",
    "Здравствуйте, расскажите, пожалуйста, как работает фотосинтез у зелёных растений.",
)

# Detectors that never cut an evidence snippet (so never need the redactor).
_NO_EVIDENCE = frozenset({"noop"})


@dataclass(frozen=True, slots=True)
class RecordError:
    """One record the scorer could not judge. ``reason`` is a bounded label (dead-letter header)."""

    reason: str
    detail: str


# One record scored: its log, its verdict and the verdict's misuse-verdict/v1 JSON.
Scored = tuple[InferenceLog, MisuseVerdict, str]


def decode_each(values: Sequence[bytes | None], max_bytes: int) -> list[InferenceLog | RecordError]:
    """decode_log per value; a value that does not decode is a RecordError with its reason."""
    out: list[InferenceLog | RecordError] = []
    for value in values:
        try:
            out.append(decode_log(value, max_bytes))
        except DecodeError as exc:
            out.append(RecordError(exc.reason.value, exc.detail))
    return out


class DetectorFailure(RuntimeError):
    """A detector fails on records and on the known-good canary alike: not the records' fault."""


class ScoringError(RuntimeError):
    """Raised by :meth:`Scorer.score` when some records could not be judged."""

    def __init__(self, errors: dict[int, RecordError]) -> None:
        shown = "; ".join(f"#{i}: {e.reason}: {e.detail}" for i, e in list(errors.items())[:5])
        super().__init__(f"{len(errors)} record(s) could not be scored: {shown}")
        self.errors = errors


class Scorer:
    def __init__(
        self, detectors: Sequence[Detector], pseudonymize: Pseudonymizer, metrics: PipelineMetrics | None = None,
        trusted: TrustedPrompts | None = None,
    ) -> None:
        if not detectors:
            raise ValueError("at least one detector must be enabled")
        self.detectors = list(detectors)
        self._pseudonymize = pseudonymize
        self._metrics = metrics
        self._trusted = trusted or TrustedPrompts()
        # Language of every screened part: volumes for the metrics, and the verdict's
        # unscreened_language signal where no enabled detector reads a part's language.
        self._languages = LanguageCoverage.of(self.detectors)
        self._warmed = False
        if metrics is not None:
            for detector in self.detectors:
                metrics.detector_info.labels(detector.name, pinned_version(detector)).set(1)
                # No shipped detector has a cheap first stage (measured not to pay, see
                # detectors/training/firststage.py): every record reaches the model.
                # Exporting skipped=0 keeps the dashboard's skip share honest (0%).
                metrics.first_stage_records.labels(detector.name, "skipped").inc(0)

    @classmethod
    def from_settings(cls, settings: Settings, metrics: PipelineMetrics | None = None) -> Scorer:
        detectors = build(settings.detectors.enabled, settings.detectors.config())
        key = settings.pseudonym_key.get_secret_value().encode("utf-8")
        return cls(detectors, Pseudonymizer(key), metrics, TrustedPrompts(settings.detectors.trusted_system_prompts))

    def preload(self, warm_up_records: int = 0) -> None:
        """Build what the detectors would load on their first finding, before the stream joins its
        group: the evidence redactor (Presidio + a spaCy model, seconds on this machine). Built
        lazily it stalled the first batch that had a finding, inside the group (py-spy, ``rules``
        stream at load about 4: 11 s of GIL time in the scoring thread). ``noop`` cuts no evidence.
        Then :meth:`warm_up` on ``warm_up_records`` records (``stream.warm_up_records``)."""
        if any(d.name not in _NO_EVIDENCE for d in self.detectors):
            redact.current()
        self.warm_up(warm_up_records)

    def warm_up(self, records: int) -> None:
        """Score ``records`` simulated records, plus a French and a Russian request, once per
        scorer and with metrics off: the stream calls this before it joins its group, so the
        detectors' first calls (torch's kernels, lazy caches, the multilingual model of the
        routed detector) are not paid inside its first batch (measured: docs/benchmarks.md,
        "Warming the detectors up"). Nothing is sent or stored; 0 does nothing."""
        if records <= 0 or self._warmed:
            return
        from detectors.training.corpora import CorpusUnavailableError
        from pipeline.simulate import simulate

        try:
            logs = [r.log for r in simulate(records, seed=WARM_UP_SEED, end=WARM_UP_END)]
        except CorpusUnavailableError as exc:  # an install without the simulator's data packages
            log.warning("warm-up without simulated records (%s): the built-in requests only", exc)
            logs = []
        logs += [CANARY.model_copy(update={"request_id": f"mm-warm-up-{i}", "prompt": text})
                 for i, text in enumerate(WARM_UP_TEXTS)]
        values = [lg.model_dump_json(by_alias=True, exclude_none=True).encode() for lg in logs]
        started = time.perf_counter()
        self._score_not_traffic(values)
        self._warmed = True
        log.info("detectors warmed up on %d records in %.1f s", len(values), time.perf_counter() - started)

    def score_canary(self) -> None:
        """Score the known-good CANARY with metrics off: the scoring journal's check before it
        blames a record for ending the process (pipeline/scoring_journal.py)."""
        self._score_not_traffic([CANARY.model_dump_json(by_alias=True, exclude_none=True).encode()])

    def _score_not_traffic(self, values: list[bytes]) -> None:
        """Score ``values`` with metrics off; what the detectors counted meanwhile is dropped."""
        metrics, self._metrics = self._metrics, None
        try:
            self.score_values(values, max_bytes=1 << 24)
        finally:
            self._metrics = metrics
            for detector in self.detectors:
                detector.take_truncated()
                detector.take_first_pass()

    def score(self, logs: Sequence[InferenceLog]) -> list[MisuseVerdict]:
        """Every record's verdict; raises :class:`ScoringError` if any record could not be judged."""
        results = self.score_each(logs)
        errors = {i: r for i, r in enumerate(results) if isinstance(r, RecordError)}
        if errors:
            raise ScoringError(errors)
        return results  # type: ignore[return-value]

    def score_each(self, logs: Sequence[InferenceLog]) -> list[MisuseVerdict | RecordError]:
        """A verdict or a :class:`RecordError` per record, in order (per-record isolation)."""
        merged: list[list[Finding]] = [[] for _ in logs]
        errors: dict[int, RecordError] = {}
        read = self._screened(logs)
        for detector in self.detectors:
            active = [i for i in range(len(logs)) if i not in errors]
            if not active:
                break
            started = time.perf_counter()
            results, failures = self._detect_isolated(detector, [read[i] for i in active])
            if failures:
                self._check_canary(detector, failures)
                for j, exc in failures.items():
                    log.warning("detector %s failed on record %s: %r", detector.name, logs[active[j]].request_id, exc)
                    errors[active[j]] = RecordError("detector_error", f"{detector.name}: {exc!r}"[:500])
                if self._metrics is not None:
                    self._metrics.detector_errors.labels(detector.name).inc(len(failures))
            if self._metrics is not None:
                self._metrics.detector_duration.labels(detector.name).observe(time.perf_counter() - started)
                self._metrics.first_stage_records.labels(detector.name, "escalated").inc(len(active))
                for part, count in detector.take_truncated().items():
                    self._metrics.truncated_texts.labels(detector.name, part).inc(count)
                for outcome, count in detector.take_first_pass().items():
                    self._metrics.first_pass_windows.labels(detector.name, outcome).inc(count)
            for j, found in enumerate(results):
                if found is not None:
                    merged[active[j]].extend(found)
        parts = [lg.screened_parts() for lg in read]  # built once for both record-level signals
        unread = self._unread_languages(parts)
        cut = self._cut_parts(parts)
        out: list[MisuseVerdict | RecordError] = []
        for i, lg in enumerate(logs):
            if i in errors:
                out.append(errors[i])
                continue
            try:
                signals = [s for s, on in ((Signal.UNSCREENED_LANGUAGE, unread[i]), (Signal.UNSCREENED_TEXT, cut[i])) if on]
                out.append(build_verdict(lg, merged[i], self._pseudonymize, signals))
            except ValueError as exc:  # pydantic ValidationError included: a finding this record made invalid
                out.append(RecordError("verdict_error", repr(exc)[:500]))
        return out

    def score_values(self, values: Sequence[bytes | None], max_bytes: int) -> list[Scored | RecordError]:
        """Decode and score raw records (the stream's unit of work): per value, its log, verdict
        and verdict JSON, or a RecordError (decode errors included, with their reason)."""
        decoded = decode_each(values, max_bytes)
        results = iter(self.score_batch([d for d in decoded if not isinstance(d, RecordError)]))
        out: list[Scored | RecordError] = []
        for d in decoded:
            r = d if isinstance(d, RecordError) else next(results)
            out.append(r if isinstance(r, RecordError) else (d, r[0], r[1]))
        return out

    def score_batch(self, logs: Sequence[InferenceLog]) -> list[tuple[MisuseVerdict, str] | RecordError]:
        """Per record, its verdict with the verdict's misuse-verdict/v1 JSON, or a RecordError."""
        out: list[tuple[MisuseVerdict, str] | RecordError] = []
        for result in self.score_each(logs) if logs else []:
            if isinstance(result, RecordError):
                out.append(result)
                continue
            try:
                out.append((result, result.to_json()))
            except ValueError as exc:  # e.g. text that cannot be serialised as UTF-8
                out.append(RecordError("verdict_error", repr(exc)[:500]))
        return out

    def _screened(self, logs: Sequence[InferenceLog]) -> Sequence[InferenceLog]:
        """What the detectors read of each record: the record less the system-prompt text the
        operator trusts (pipeline/trusted.py), counted in mm_trusted_system_prompts_total.
        The verdict is built from the record itself."""
        if not self._trusted:
            return logs
        read = []
        for lg in logs:
            screened, cut = self._trusted.screened(lg)
            read.append(screened)
            if self._metrics is not None:
                for (role, rest), n in cut.items():
                    self._metrics.trusted_system_prompts.labels(role, rest).inc(n)
        return read

    def _cut_parts(self, parts_of: Sequence[Sequence[ScreenedPart]]) -> list[bool]:
        """Per record: is some screened part longer than the detectors read (the verdict's
        unscreened_text signal)? Each such part counts in mm_detector_truncated_texts_total for
        every detector that reads text and does not count its own truncation (the transformer's
        window cap is always hit by such a part, and it counts that)."""
        try:
            from detectors.normalize import cut_short
        except ImportError:  # pragma: no cover - core install without the detector extra
            return [False] * len(parts_of)
        out = []
        for screened in parts_of:
            parts = [p for p in screened if cut_short(p.text)]
            if parts and self._metrics is not None:
                for detector in self.detectors:
                    if detector.name not in _NO_EVIDENCE and type(detector).take_truncated is Detector.take_truncated:
                        for part in parts:
                            self._metrics.truncated_texts.labels(detector.name, part.kind.value).inc()
            out.append(bool(parts))
        return out

    def _unread_languages(self, parts_of: Sequence[Sequence[ScreenedPart]]) -> list[bool]:
        """Per record: is some screened part in a language no enabled detector reads?

        Every part is detected on its own (CLD2 on its head, detectors/language.py): the system
        prompt, each turn, tool calls and results, reasoning and the completion. Detecting the
        joined prompt instead let an English system prompt hide a user turn in an unread language,
        and never looked at earlier assistant turns, tool calls or reasoning (a hostile check,
        2026-12-02). Cost on 3,000 simulate records (3.0 parts each, bench/bench_language_cost.py):
        44-46 us of CPU per record, against 32-37 us for the joined prompt and the completion. Also counts
        mm_screened_texts_total and mm_unscreened_language_texts_total per side and language
        (one text per part)."""
        unread = [False] * len(parts_of)
        try:
            for i, screened in enumerate(parts_of):
                for part in screened:
                    unread[i] = not self._languages.observe(part.side.value, part.text) or unread[i]
        except ImportError:  # pragma: no cover - core install without the detector extra (pycld2)
            return unread
        read, unscreened = self._languages.take()
        if self._metrics is not None:
            for (side, language), n in (read + unscreened).items():
                self._metrics.screened_texts.labels(side, language).inc(n)
            for (side, language), n in unscreened.items():
                self._metrics.unscreened_language_texts.labels(side, language).inc(n)
        return unread

    def _detect_isolated(
        self, detector: Detector, batch: list[InferenceLog]
    ) -> tuple[list[list[Finding] | None], dict[int, BaseException]]:
        """Findings per record (None where the detector raised), splitting the batch on failure."""
        try:
            try:
                results = detector.detect(batch)
            except PartialDetectionError as exc:
                results = exc.partial
                log.warning("detector %s could not judge %d record(s) of the batch: %s", detector.name, len(exc.failures), exc)
                if self._metrics is not None:
                    self._metrics.detector_errors.labels(detector.name).inc(len(exc.failures))
        except Exception as exc:  # noqa: BLE001 - isolated below: one record's failure must not stop the batch
            if len(batch) == 1:
                return [None], {0: exc}
            mid = len(batch) // 2
            left, left_failed = self._detect_isolated(detector, batch[:mid])
            right, right_failed = self._detect_isolated(detector, batch[mid:])
            return left + right, {**left_failed, **{mid + j: e for j, e in right_failed.items()}}
        if len(results) != len(batch):
            raise DetectorFailure(f"detector {detector.name} returned {len(results)} results for {len(batch)} records")
        return list(results), {}

    def _check_canary(self, detector: Detector, failures: dict[int, BaseException]) -> None:
        try:
            detector.detect([CANARY])
        except Exception as exc:  # noqa: BLE001 - re-raised as a systemic failure
            first = next(iter(failures.values()))
            raise DetectorFailure(f"detector {detector.name} fails on a known-good record too: {exc!r}") from first

    def close(self) -> None:
        for detector in self.detectors:
            detector.close()
