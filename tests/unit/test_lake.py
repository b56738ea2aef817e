from datetime import UTC, datetime, timedelta

import pyarrow.compute as pc
import pytest

from pipeline.lake import LakeFile, LakeWriter, to_rows
from pipeline.privacy import LakePolicy
from pipeline.sinks.base import ScoredRecord, SourcePosition
from pipeline.verdicts import Pseudonymizer, build_verdict
from tests.fixtures.logs import make_log

T0 = datetime(2026, 11, 28, 23, 59, 0, tzinfo=UTC)


def _records(offsets, partition=0, topic="logs.in"):
    out = []
    for off in offsets:
        # Offsets >= 100 fall on the next day, so a batch spans two date partitions.
        ts = T0 + timedelta(minutes=2 if off >= 100 else 0)
        log = make_log(request_id=f"r{partition}-{off}", timestamp=ts.isoformat())
        out.append(ScoredRecord(log, build_verdict(log, [], Pseudonymizer(b"k")), SourcePosition(topic, partition, off)))
    return out


def _stored(writer):
    table = writer.read()
    return sorted(zip(table.column("source_partition").to_pylist(), table.column("source_offset").to_pylist()))


def test_files_are_partitioned_by_date_and_named_by_offset_range(tmp_path):
    writer = LakeWriter(tmp_path)
    paths = writer.write(_records(range(95, 105)))
    names = sorted(p.relative_to(tmp_path / "verdicts").as_posix() for p in paths)
    assert names == ["date=2026-11-28/logs.in-0-95-99.parquet", "date=2026-11-29/logs.in-0-100-104.parquet"]
    assert LakeFile.parse(paths[0]).topic == "logs.in"


def test_replay_with_other_batch_boundaries_stores_each_offset_once(tmp_path):
    writer = LakeWriter(tmp_path)
    writer.write(_records(range(0, 50)))
    writer.write(_records(range(50, 80)))
    # After a crash the consumer re-reads from 30 with different batch sizes.
    writer.write(_records(range(30, 60)))
    writer.write(_records(range(60, 90)))
    writer.write(_records(range(0, 5), partition=1))
    stored = _stored(writer)
    assert stored == sorted([(0, o) for o in range(90)] + [(1, o) for o in range(5)])


def test_identical_replay_rewrites_the_same_file(tmp_path):
    writer = LakeWriter(tmp_path)
    first = writer.write(_records(range(10)))
    again = writer.write(_records(range(10)))
    assert first == again
    assert len(list((tmp_path / "verdicts").rglob("*.parquet"))) == 1


def test_lake_rows_carry_verdict_and_original_log(tmp_path):
    writer = LakeWriter(tmp_path, LakePolicy(raw_text="all"))
    writer.write(_records([7]))
    table = writer.read()
    assert table.num_rows == 1
    assert '"request_id":"r0-7"' in table.column("log_json")[0].as_py()
    assert pc.all(pc.equal(table.column("flagged"), False)).as_py()


def test_findings_keep_part_location_and_signals_and_old_files_still_read(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from pipeline.lake import FINDING_TYPE, LAKE_SCHEMA
    from pipeline.schemas import Category, Finding, PartKind, Side, Signal

    log = make_log(request_id="new", timestamp=T0.isoformat())
    finding = Finding(
        category=Category.CYBER_ABUSE, side=Side.PROMPT, score=0.9, detector="rules", detector_version="1",
        evidence="x", part=PartKind.ASSISTANT, location="messages[2].content", signals=[Signal.OBFUSCATION],
    )
    writer = LakeWriter(tmp_path)
    writer.write([ScoredRecord(log, build_verdict(log, [finding], Pseudonymizer(b"k")), SourcePosition("logs.in", 0, 5))])
    # A file written before the three fields existed: the same rows, findings without them.
    old_finding = pa.struct([f for f in FINDING_TYPE if f.name not in ("part", "location", "signals")])
    old_schema = pa.schema([pa.field("findings", pa.list_(old_finding)) if f.name == "findings" else f for f in LAKE_SCHEMA])
    old_rows = writer.read().to_pylist()
    for row in old_rows:
        row["source_offset"] = 2
        for f in row["findings"]:
            del f["part"], f["location"], f["signals"]
    old_path = tmp_path / "verdicts" / "date=2026-11-28" / "logs.in-0-2-2.parquet"
    pq.write_table(pa.Table.from_pylist(old_rows, schema=old_schema), old_path)

    rows = {row["source_offset"]: row["findings"][0] for row in writer.read().to_pylist()}
    assert rows[5]["part"] == "assistant" and rows[5]["location"] == "messages[2].content"
    assert rows[5]["signals"] == ["obfuscation"]
    assert rows[2]["category"] == "cyber_abuse" and rows[2]["part"] is None and rows[2]["signals"] is None
    # A replay over the old file's range trims (re-reads) it with the new schema.
    writer.write(_records([2]))
    assert _stored(writer) == [(0, 2), (0, 5)]


# The lake's language is the user's own text's, not whatever heads the joined prompt.
_SYSTEM_EN = (
    "You are a helpful assistant for an online bookshop. Answer questions about orders, deliveries, "
    "returns and recommendations politely and concisely. "
) * 6  # 882 characters: longer than the 500 that CLD2 reads
_FRENCH = "Bonjour, pouvez-vous m'expliquer comment retourner un livre que j'ai commandé la semaine dernière ?"
_GERMAN = "Guten Tag, ich möchte wissen, wann meine Bestellung ungefähr geliefert wird, bitte schnell antworten."


def _language_of(**fields) -> str | None:
    log = make_log(**fields)
    rec = ScoredRecord(log, build_verdict(log, [], Pseudonymizer(b"k")), SourcePosition("logs.in", 0, 0))
    return to_rows([rec])[0]["language"]


def test_language_is_the_users_turn_not_a_long_english_system_prompt():
    # Found on 2026-12-03: CLD2 on the joined prompt's head stored this French request as "en".
    messages = [{"role": "system", "content": _SYSTEM_EN}, {"role": "user", "content": _FRENCH}]
    assert _language_of(prompt=None, messages=messages) == "fr"


def test_language_goes_back_to_an_earlier_user_turn_when_the_last_cannot_be_told():
    messages = [
        {"role": "system", "content": _SYSTEM_EN},
        {"role": "user", "content": _GERMAN},
        {"role": "assistant", "content": "Your order ships tomorrow and should arrive within three working days."},
        {"role": "User", "content": "ok, danke"},
    ]
    assert _language_of(prompt=None, messages=messages) == "de"


def test_language_prefers_the_prompt_field_and_falls_back_to_the_joined_prompt_without_user_text():
    assert _language_of(prompt=_FRENCH, messages=[{"role": "user", "content": _GERMAN}]) == "fr"
    # No user text at all (a tool-only exchange): the joined prompt, as before.
    assert _language_of(prompt=None, messages=[{"role": "tool", "content": _GERMAN}]) == "de"
    # User text that cannot be told: undetermined, not the system prompt's language.
    assert _language_of(prompt=None, messages=[{"role": "system", "content": _SYSTEM_EN}, {"role": "user", "content": "ok"}]) == "und"


def test_language_reads_the_turns_screening_counts_as_the_users():
    # A role the schema does not name ("human", as some gateways write it) is screened as the
    # user's turn (ChatMessage.kind); the lake's language reads the same turns.
    messages = [{"role": "system", "content": _SYSTEM_EN}, {"role": "human", "content": _FRENCH}]
    assert _language_of(prompt=None, messages=messages) == "fr"


def test_two_writers_of_overlapping_ranges_lose_nothing(tmp_path, monkeypatch):
    """A soak (2026-12-04): a member evicted mid-batch and the partition's new owner writing
    100-119 and 100-139 each trimmed the other's new file, and 100-119 was lost. Writes of one
    partition are now serialised (a flock from the write to the last trim). The window between
    a writer's file and its listing is widened here so that the two writes always interleave
    without the lock."""
    import threading
    import time

    listing = LakeWriter.files

    def slow_listing(directory, topic, partition):
        time.sleep(0.3)  # the other writer's file lands meanwhile, unless it waits for the lock
        return listing(directory, topic, partition)

    monkeypatch.setattr(LakeWriter, "files", staticmethod(slow_listing))
    zombie, owner = LakeWriter(tmp_path), LakeWriter(tmp_path)
    zombie_records, owner_records = _records(range(100, 120)), _records(range(100, 140))
    errors: list[BaseException] = []

    def write(writer, records):
        try:
            writer.write(records)
        except BaseException as exc:  # surfaced below: a thread's exception is otherwise lost
            errors.append(exc)

    first = threading.Thread(target=write, args=(zombie, zombie_records))
    second = threading.Thread(target=write, args=(owner, owner_records))
    first.start()
    time.sleep(0.1)
    second.start()
    first.join(30)
    second.join(30)
    assert not errors
    assert _stored(LakeWriter(tmp_path)) == [(0, o) for o in range(100, 140)]


def test_the_longest_input_topic_the_settings_allow_with_the_lake_makes_a_file_name_that_fits(tmp_path):
    """Kafka allows 249-character topic names; a file name holds 255 bytes. A 240-character topic
    failed every lake write with "File name too long" (a hostile review, 2026-12-06): such a
    topic is a config error with the lake sink, and the longest allowed one writes."""
    import pydantic

    from pipeline.lake import file_name
    from pipeline.settings import MAX_LAKE_TOPIC_BYTES, KafkaSettings, Settings

    longest = "t" * MAX_LAKE_TOPIC_BYTES
    Settings(kafka=KafkaSettings(input_topic=longest))
    with pytest.raises(pydantic.ValidationError, match="kafka.input_topic is 192 bytes long"):
        Settings(kafka=KafkaSettings(input_topic=longest + "t"))
    Settings(kafka=KafkaSettings(input_topic=longest + "t"), sinks=["verdict_topic"])  # no lake: no limit
    worst = file_name(longest, 2**31 - 1, 2**63 - 1, 2**63 - 1)
    (tmp_path / f".{worst}.tmp").write_bytes(b"")  # the longest name the lake writes, as the OS takes it
