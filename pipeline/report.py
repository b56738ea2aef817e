"""``misuse-monitor report``: the Spark job outputs as one self-contained HTML page.

Reads ``<input>/aggregates``, ``offenders``, ``campaigns`` and ``shadow`` (any may be
missing; its section then says how to produce it) and, when given, the verdict lake
(``--lake``: detector versions, exact time coverage so partial days are marked, dead letters
of backfills), reviewed labels (``--labels``, scored with pipeline/labels.py) and the alert
database (``--alerts-db``: alerts firing or resolved minutes ago, deliveries by state), and the stream's dead-letter
topic (``--dead-letter-topic``: its reasons join the backfill's). It writes a single HTML file
with the plots embedded as base64 PNG: no scripts, no external assets, so it can be mailed or
attached to a ticket. Plots use matplotlib's object API (no pyplot global state) and PNGs
are written without a timestamp, so the same inputs give the same page.
"""

from __future__ import annotations

import base64
import io
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from pipeline.exits import first_line
from pipeline.stdio import is_dash, open_output, output_path_or_dash, output_path_problem, same_file

if TYPE_CHECKING:
    from collections.abc import Callable

    import pandas as pd
    import pyarrow as pa
    from matplotlib.figure import Figure

    from pipeline.settings import KafkaSettings

# pandas, pyarrow, matplotlib and jinja2 are imported where used: this module is imported by
# the CLI on every `misuse-monitor` call, and they cost ~0.7 s to import.

TEMPLATES = Path(__file__).parent / "templates"
CATEGORY_COLORS = {
    "cyber_abuse": "#cf222e",
    "misinformation": "#bf8700",
    "jailbreak": "#8250df",
    "other_harm": "#0969da",
}
SEVERITY_COLORS = {"low": "#d4e5f7", "medium": "#f2cc60", "high": "#e16f24", "critical": "#a40e26"}
TOP_OFFENDERS = 15
TOP_CAMPAIGNS = 10
# Tenants, deployments and models are the client's to name: 20,000 of them made a page of 20,005
# rows, and a mix plot of 20,000 bars ran for minutes (a hostile review, 2026-12-06). The rest
# are summed in one row or bar.
TOP_VOLUMES = 25
TOP_MIX_MODELS = 20


# A day is drawn as partial when the data starts this long after midnight or ends this long before it.
PARTIAL_DAY_SLACK_H = 1.0
_FRAMES = ("aggregates", "offenders", "campaigns", "shadow_diff", "shadow_metrics", "lake", "dead_letters")


class ReportError(RuntimeError):
    """The report could not be built (no job output found, unreadable files)."""


@dataclass
class AlertSummary:
    """What the alert database says: alerts by name and status, deliveries by receiver and state."""

    alerts: list[dict[str, Any]] = field(default_factory=list)  # alertname, status, count
    deliveries: list[dict[str, Any]] = field(default_factory=list)  # receiver, state, count


@dataclass
class ReportInputs:
    """The job outputs a report is built from (None or empty when a job was not run)."""

    aggregates: pd.DataFrame | None = None
    offenders: pd.DataFrame | None = None
    campaigns: pd.DataFrame | None = None
    shadow_diff: pd.DataFrame | None = None
    shadow_metrics: pd.DataFrame | None = None
    # Verdict rows of the lake (LAKE_SCHEMA columns, without the JSON copies) and backfill dead letters.
    lake: pd.DataFrame | None = None
    dead_letters: pd.DataFrame | None = None
    accuracy: Any = None  # pipeline.labels.Accuracy when labels were given
    wrong_flags: Any = None  # Counter (category, part) -> records, when labels were given
    alerts: AlertSummary | None = None
    # Job folders that hold Parquet files but no rows (the jobs ran and found nothing in their
    # period): the page says so, where "not run" would send the reader to run them again.
    empty_outputs: tuple[str, ...] = ()
    lake_given: bool = False

    def __post_init__(self) -> None:
        import pandas as pd

        for name in _FRAMES:
            if getattr(self, name) is None:
                setattr(self, name, pd.DataFrame())

    @classmethod
    def load(
        cls,
        root: Path,
        lake: Path | None = None,
        labels: Path | None = None,
        alerts_db: str | None = None,
        dead_letter_topic: tuple[KafkaSettings | str, str] | None = None,
    ) -> ReportInputs:
        folders = {name: root / name for name in ("aggregates", "offenders", "campaigns", "shadow/diff", "shadow/metrics")}
        written = [name for name, path in folders.items() if _has_parquet(path)]
        if not written:
            hint = ""
            if (root / "verdicts").is_dir():  # a lake given where the jobs' --out goes (a newcomer review, 2026-12-07)
                hint = (f"; {root} is a lake: run `misuse-monitor spark all --lake {root} --out JOBS` first, "
                        f"then `misuse-monitor report JOBS --lake {root}`")
            raise ReportError(f"no job output under {root} (expected aggregates/, offenders/, campaigns/ or shadow/){hint}")
        frames = {name: _read(path, REQUIRED_COLUMNS[name]) for name, path in folders.items()}
        inputs = cls(
            aggregates=frames["aggregates"], offenders=_pseudonyms_only(frames["offenders"]), campaigns=frames["campaigns"],
            shadow_diff=frames["shadow/diff"], shadow_metrics=frames["shadow/metrics"],
            empty_outputs=tuple(f"{name}/" for name in written if frames[name].empty),
        )
        if lake is not None:
            inputs.lake_given = True
            inputs.lake = _read_lake(lake)
            inputs.dead_letters = _read(lake / "dead_letters", REQUIRED_COLUMNS["dead_letters"])
        if labels is not None:
            if lake is None:
                raise ReportError("--labels needs --lake (the verdicts to score)")
            from pipeline.labels import read_labels, read_verdicts, score, wrong_flags_by_part

            read, predicted = read_labels(labels), read_verdicts(lake)
            inputs.accuracy = score(read, predicted)
            inputs.wrong_flags = wrong_flags_by_part(read, predicted)
        if alerts_db is not None:
            inputs.alerts = read_alerts(alerts_db)
        if dead_letter_topic is not None:
            import pandas as pd

            streamed = read_dead_letter_topic(*dead_letter_topic)
            inputs.dead_letters = pd.concat([inputs.dead_letters, streamed], ignore_index=True)
        return inputs


def read_dead_letter_topic(kafka: KafkaSettings | str, topic: str, timeout_s: float = 60.0) -> pd.DataFrame:
    """The stream's dead letters (``error_reason`` from the ``mm.error.reason`` header), read from
    the beginning of the topic to its end offsets as they were when the call started.

    ``kafka``: the settings' Kafka section, so a secured cluster is read with its SASL/TLS options
    (a bare bootstrap string connects in plaintext)."""
    import pandas as pd
    from kafka import KafkaConsumer, TopicPartition

    options = {"bootstrap_servers": kafka.split(",")} if isinstance(kafka, str) else kafka.client_options()
    bootstrap = ",".join(options["bootstrap_servers"])
    consumer = KafkaConsumer(**options, group_id=None, enable_auto_commit=False)
    try:
        partitions = consumer.partitions_for_topic(topic)
        if not partitions:
            raise ReportError(f"dead-letter topic {topic} not found on {bootstrap}")
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        ends = consumer.end_offsets(tps)
        reasons: list[str] = []
        deadline = time.monotonic() + timeout_s
        while any(consumer.position(tp) < ends[tp] for tp in tps):
            if time.monotonic() > deadline:
                raise ReportError(f"reading {topic} took longer than {timeout_s:.0f} s")
            for records in consumer.poll(timeout_ms=500).values():
                for rec in records:
                    if rec.offset < ends[TopicPartition(rec.topic, rec.partition)]:
                        reason = dict(rec.headers or []).get("mm.error.reason", b"unknown")
                        reasons.append(reason.decode("utf-8", "replace"))
    finally:
        consumer.close()
    return pd.DataFrame({"error_reason": reasons})


def _read_lake(root: Path) -> pd.DataFrame:
    import pyarrow.dataset as ds

    files = sorted(str(p) for p in (root / "verdicts").rglob("*.parquet")) if (root / "verdicts").is_dir() else []
    files = files or sorted(str(p) for p in root.glob("date=*/*.parquet"))
    if not files:
        raise ReportError(f"no verdict Parquet files under {root}")
    columns = ["request_id", "timestamp", "date", "tenant_id", "deployment", "model", "flagged", "categories", "findings"]
    try:
        # By file name, not as a Hive dataset: date= folders would add a clashing `date` column.
        table = ds.dataset(files, format="parquet").to_table(columns=columns)
    except (OSError, ValueError) as exc:
        raise ReportError(f"cannot read the lake {root}: {exc}") from exc
    # The kinds of the lake's own types (pipeline/lake.py; kinds, not exact types, so lakes of
    # earlier versions, whose finding structs had fewer fields, still read): files of another
    # writer with text timestamps, a list of strings as findings or an empty flagged ended in
    # "internal error" deep in a plot (a hostile review, 2026-12-07).
    import pyarrow as pa

    def text(t: pa.DataType) -> bool:
        return pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_null(t)

    kinds = {
        "timestamp": (pa.types.is_timestamp, "a timestamp"), "flagged": (pa.types.is_boolean, "true/false"),
        "categories": (lambda t: pa.types.is_null(t) or (pa.types.is_list(t) and text(t.value_type)), "a list of text"),
        "findings": (lambda t: pa.types.is_null(t) or (pa.types.is_list(t) and pa.types.is_struct(t.value_type)), "a list of findings"),
    }
    for column in columns:
        kind = table.schema.field(column).type
        ok, what = kinds.get(column, (text, "text"))
        if not ok(kind):
            raise ReportError(f"the lake {root} is not one this report reads: column {column} holds {kind}, not {what}")
    if table.column("flagged").null_count:
        raise ReportError(f"the lake {root} is not one this report reads: column flagged has empty values")
    return table.to_pandas()


def read_alerts(url: str) -> AlertSummary:
    """Alerts by (alertname, status) and the outbox by (receiver, state) from the alert database."""
    import time

    import sqlalchemy as sa

    from pipeline.alerts import state as db
    from pipeline.alerts.outbox import Outbox

    try:
        engine = db.create_db_engine(url, must_exist=True)  # a report never creates one
    except db.AlertStoreError as exc:
        # The store's hint names `alerts`' option (--db-url); this command's is --alerts-db.
        raise db.AlertStoreError(str(exc).replace("--db-url", "--alerts-db")) from exc
    now = time.time()
    try:
        with engine.connect() as conn:
            rows = list(conn.execute(sa.select(db.alerts.c.labels, db.alerts.c.ends_at)).mappings())
        deliveries = Outbox(engine).counts()
    except sa.exc.SQLAlchemyError as exc:
        raise ReportError(f"cannot read the alert database: {str(exc).splitlines()[0]}") from exc
    finally:
        engine.dispose()
    by_alert: dict[tuple[str, str], int] = {}
    for row in rows:
        key = (dict(row["labels"]).get("alertname", "?"), "firing" if row["ends_at"] > now else "resolved")
        by_alert[key] = by_alert.get(key, 0) + 1
    return AlertSummary(
        alerts=[{"alertname": a, "status": st, "count": n} for (a, st), n in sorted(by_alert.items())],
        deliveries=[{"receiver": r, "state": st, "count": n} for (r, st), n in sorted(deliveries.items())],
    )


# Columns the page reads from each job output folder (by its path under the --out folder); one
# missing meant a KeyError deep in a plot. Columns read with .get() (dominant_category) are optional.
REQUIRED_COLUMNS: dict[str, tuple[str, ...]] = {
    "aggregates": ("date", "tenant_id", "deployment", "model", "category", "records", "flagged",
                   *(f"severity_{s}" for s in SEVERITY_COLORS)),
    "offenders": ("rank", "user_id", "risk"),
    "campaigns": ("campaign_id", "records", "users"),
    "shadow/diff": ("change",),
    # Every column the shadow table shows: one missing was a jinja2 UndefinedError (exit 1).
    "shadow/metrics": ("scope", "variant", "tp", "fp", "fn", "tn", "precision", "recall"),
    "dead_letters": ("error_reason",),
}


# What each column read by the page holds: a column of another type (records as text, dates
# that are not dates, a list where a name goes, empty user ids or risks) was a TypeError deep in
# a plot or a filter, exit 1 (a hostile review, 2026-12-06); now an input error naming it.
# "name" columns may hold nulls (shown as such), and so may precision and recall (undefined
# for a scope without positives); the other "number" and the "key" columns may not.
_NUMBER = ("records", "flagged", "users", "rank", "risk", "tp", "fp", "fn", "tn", "precision", "recall",
           *(f"severity_{s}" for s in SEVERITY_COLORS))
_KEY = ("user_id", "campaign_id")
_NAME = ("tenant_id", "deployment", "model", "category", "change", "scope", "variant", "error_reason",
         "representative_prompt")


# Longest tick label: a 20,000-character model name made a plot 240,959 pixels wide, and a user
# id of a million characters ended in "internal error" (a hostile review, 2026-12-07).
MAX_LABEL = 40


def _short(label: str) -> str:
    return label if len(label) <= MAX_LABEL else label[: MAX_LABEL - 1] + "…"


def _inside(path: Path, folder: Path) -> bool:
    """Is ``path`` in ``folder`` (or ``folder`` itself), through symlinks too?"""
    return path.resolve().is_relative_to(folder.resolve())


def _pseudonyms_only(offenders: pd.DataFrame) -> pd.DataFrame:
    """Offenders with every user id that is not a pseudonym (``u_`` + 20 hex digits) masked: the
    page calls the column "user (pseudonymised)", and an offenders output of a lake written
    without pseudonyms (or by another tool) showed raw ids such as e-mail addresses (a hostile
    review, 2026-12-07). The mask is numbered, so the rows stay apart."""
    if offenders.empty or "user_id" not in offenders:
        return offenders
    from pipeline.verdicts import PSEUDONYM

    ids = offenders["user_id"].astype(str)
    raw = ~ids.str.fullmatch(PSEUDONYM.pattern)
    if raw.any():
        offenders = offenders.copy()
        offenders.loc[raw, "user_id"] = [f"(not a pseudonym, hidden) #{i}" for i in range(1, int(raw.sum()) + 1)]
    return offenders


# Counts and scores above this are refused: sums stay exact in float64 and int64.
_MAX_COUNT = 2**53
# Dates the plots can draw: matplotlib's calendar ends at year 9999, and its tick locator reached
# past it on a span from 2026 to 9999 ("internal error"; a hostile review, 2026-12-07).
_FIRST_DATE, _LAST_DATE = "1970-01-01", "2200-12-31"


def _check_date_range(bad: Callable[[str, str], ReportError], column: str, dates: pa.ChunkedArray) -> None:
    import datetime as dt

    import pyarrow.compute as pc

    low, high = pc.min(dates).as_py(), pc.max(dates).as_py()
    first, last = dt.date.fromisoformat(_FIRST_DATE), dt.date.fromisoformat(_LAST_DATE)
    for value in (low, high):
        day = value.date() if isinstance(value, dt.datetime) else value
        if day is not None and not first <= day <= last:
            raise bad(column, f"holds a date outside {_FIRST_DATE}..{_LAST_DATE} ({day})")


def _check_types(path: Path, table: pa.Table) -> None:
    import pyarrow as pa
    import pyarrow.compute as pc

    def bad(column: str, why: str) -> ReportError:
        return ReportError(f"{path} is not a job output this report reads: column {column} {why}")

    names = set(table.column_names)
    for column in names & {"categories", "models"}:  # offenders' and campaigns' lists of names
        kind = table.schema.field(column).type
        if not (pa.types.is_null(kind) or (pa.types.is_list(kind) or pa.types.is_large_list(kind))
                and (pa.types.is_string(kind.value_type) or pa.types.is_large_string(kind.value_type))):
            raise bad(column, f"holds {kind}, not lists of text")
    for column in names & {*_NUMBER, *_KEY, *_NAME, "date"}:
        kind = table.schema.field(column).type
        nulls = table.column(column).null_count
        if column in _NUMBER:
            if not (pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_null(kind)):
                raise bad(column, f"holds {kind}, not numbers")
            if nulls and column not in ("precision", "recall"):
                raise bad(column, f"has {nulls} empty value(s)")
            # Counts and scores are finite, not negative, and small enough to sum exactly: an
            # infinity or 1e300 ended in "internal error", a negative count or int64 sums that
            # wrapped gave a page with -80 records (a hostile review, 2026-12-07).
            values = table.column(column)
            if pa.types.is_floating(kind) and pc.any(pc.invert(pc.is_finite(values))).as_py():
                raise bad(column, "holds a value that is not a finite number")
            if not pa.types.is_null(kind) and (low := pc.min(values).as_py()) is not None and low < 0:
                raise bad(column, f"holds a negative value ({low})")
            if not pa.types.is_null(kind) and (high := pc.max(values).as_py()) is not None and high > _MAX_COUNT:
                raise bad(column, f"holds a value over {_MAX_COUNT:,} ({high:.3g})")
        elif column == "date":
            if pa.types.is_date(kind):
                _check_date_range(bad, column, table.column(column))
                continue
            if not pa.types.is_string(kind) and not pa.types.is_large_string(kind):
                raise bad(column, f"holds {kind}, not dates")
            try:
                dates = pc.strptime(table.column(column), format="%Y-%m-%d", unit="s")
            except (pa.ArrowInvalid, ValueError) as exc:
                raise bad(column, f"holds a value that is not a YYYY-MM-DD date ({first_line(exc)[:80]})") from None
            _check_date_range(bad, column, dates)
        elif not (pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_null(kind)):
            raise bad(column, f"holds {kind}, not text")
        elif column in _KEY and nulls:
            raise bad(column, f"has {nulls} empty value(s)")


def _has_parquet(path: Path) -> bool:
    return path.is_dir() and any(path.glob("*.parquet"))


def _read(path: Path, required: tuple[str, ...] = ()) -> pd.DataFrame:
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    if not _has_parquet(path):
        return pd.DataFrame()
    try:
        table = pq.read_table(path)
    # pyarrow's ArrowInvalid (not Parquet) is a ValueError; files whose schemas cannot be unified
    # (a list where another file has text) raise ArrowNotImplementedError.
    except (OSError, ValueError, pa.ArrowException) as exc:
        first = first_line(exc, type(exc).__name__)
        raise ReportError(f"cannot read {path}: {first}") from exc
    missing = [c for c in required if c not in table.column_names]
    if missing and table.num_rows:
        raise ReportError(f"{path} is not a job output this report reads: column(s) {', '.join(missing)} missing")
    if table.num_rows:
        _check_types(path, table)
    return table.to_pandas()


def _png(fig: Figure) -> str:
    buf = io.BytesIO()
    # metadata={"Software": None} drops matplotlib's version stamp: deterministic bytes.
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight", metadata={"Software": None})
    return base64.b64encode(buf.getvalue()).decode("ascii")


def partial_days(lake: pd.DataFrame) -> dict[str, str]:
    """date -> why it is partial ("from 14:05" / "until 09:10"), from the lake's first and last timestamp.

    Only the first and the last day of the data can be partial; a first day that starts in the
    afternoon would otherwise read as growth on a daily chart."""
    import pandas as pd

    if lake.empty:
        return {}
    ts = pd.to_datetime(lake["timestamp"], utc=True)
    first, last = ts.min(), ts.max()
    out: dict[str, str] = {}
    slack = pd.Timedelta(hours=PARTIAL_DAY_SLACK_H)
    if first - first.normalize() > slack:
        out[first.strftime("%Y-%m-%d")] = f"from {first:%H:%M} UTC"
    if last.normalize() + pd.Timedelta(days=1) - last > slack:
        key = last.strftime("%Y-%m-%d")
        out[key] = f"{out[key]} until {last:%H:%M} UTC" if key in out else f"until {last:%H:%M} UTC"
    return out


MAX_DAILY_TICKS = 31


def trend_plot(agg: pd.DataFrame, partial: dict[str, str] | None = None) -> str | None:
    fig = trend_figure(agg, partial)
    return None if fig is None else _png(fig)


def trend_figure(agg: pd.DataFrame, partial: dict[str, str] | None = None) -> Figure | None:
    """Daily records and flagged records (left), flagged share per category (right).

    One tick per day; partial days (``partial_days``) get hollow markers and a note, so a
    short first or last day is not mistaken for a drop or a rise."""
    import matplotlib.dates as mdates
    import pandas as pd
    from matplotlib.figure import Figure
    from matplotlib.ticker import PercentFormatter

    if agg.empty:
        return None
    partial = partial or {}
    totals = agg[agg["category"] == "all"].groupby("date")[["records", "flagged"]].sum().sort_index()
    per_cat = agg[agg["category"] != "all"].pivot_table(index="date", columns="category", values="records", aggfunc="sum")
    per_cat = per_cat.reindex(totals.index).fillna(0)
    fig = Figure(figsize=(11, 3.8))
    left, right = fig.subplots(1, 2)
    x = pd.to_datetime(totals.index)
    is_partial = [d in partial for d in totals.index]

    def draw(ax, y, label: str, color: str | None) -> None:  # noqa: ANN001 - matplotlib Axes
        line = ax.plot(x, y, label=label, color=color)[0]
        full = [not p for p in is_partial]
        ax.scatter(x[full], y[full], color=line.get_color(), zorder=3, s=22)
        if any(is_partial):
            ax.scatter(x[is_partial], y[is_partial], facecolors="white", edgecolors=line.get_color(), zorder=3, s=36)

    draw(left, totals["records"].to_numpy(), "records", "#57606a")
    draw(left, totals["flagged"].to_numpy(), "flagged", "#cf222e")
    left.set_title("Daily volume" + (" (hollow: partial day)" if any(is_partial) else ""))
    left.legend()
    for cat in sorted(per_cat.columns):
        draw(right, (per_cat[cat] / totals["records"]).to_numpy(), cat, CATEGORY_COLORS.get(cat))
    right.set_title("Flagged share by category")
    right.yaxis.set_major_formatter(PercentFormatter(xmax=1.0, decimals=1))
    if len(per_cat.columns):
        right.legend()
    # One tick a day over a month at most. A lake date is its sender's timestamp (1970-2200),
    # so one record dated 1970 made 20,000 daily ticks and a report of minutes (a hostile
    # review, 2026-12-06): longer spans get matplotlib's own choice of ticks.
    long_span = len(x) > 1 and (x.max() - x.min()).days > MAX_DAILY_TICKS
    for ax in (left, right):
        if long_span:
            locator = mdates.AutoDateLocator(maxticks=MAX_DAILY_TICKS)
            ax.xaxis.set_major_locator(locator)
            ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))
        else:
            ax.xaxis.set_major_locator(mdates.DayLocator())
            ax.xaxis.set_major_formatter(mdates.DateFormatter("%b %d"))
        if len(x) == 1:  # one day: give the single tick some room
            ax.set_xlim(x[0] - pd.Timedelta(hours=12), x[0] + pd.Timedelta(hours=12))
        for day, why in partial.items():
            when = pd.Timestamp(day)
            if when in set(x):
                ax.axvspan(when - pd.Timedelta(hours=12), when + pd.Timedelta(hours=12), color="#d0d7de", alpha=0.35, lw=0)
                if ax is left:
                    ax.annotate(f"partial: {why}", (when, 0), xytext=(0, 4), textcoords="offset points",
                                xycoords=("data", "axes fraction"), ha="center", fontsize="x-small", color="#57606a")
        ax.tick_params(axis="x", labelrotation=30)
        ax.grid(alpha=0.3)
    return fig


def mix_plot(agg: pd.DataFrame) -> str | None:
    fig = mix_figure(agg)
    return None if fig is None else _png(fig)


def mix_figure(agg: pd.DataFrame) -> Figure | None:
    """Flagged records per model split by category (left) and severity mix (right)."""
    import pandas as pd
    from matplotlib.figure import Figure

    if agg.empty:
        return None
    cats = agg[agg["category"] != "all"]
    if cats.empty:
        return None
    by_model = cats.pivot_table(index="model", columns="category", values="records", aggfunc="sum").fillna(0)
    if len(by_model) > TOP_MIX_MODELS:
        order = by_model.sum(axis=1).sort_values(ascending=False).index
        rest = by_model.loc[order[TOP_MIX_MODELS:]].sum().rename(f"({len(order) - TOP_MIX_MODELS:,} more)")
        by_model = pd.concat([by_model.loc[order[:TOP_MIX_MODELS]], rest.to_frame().T])
    totals = agg[agg["category"] == "all"]
    severity = {s: int(totals[f"severity_{s}"].sum()) for s in SEVERITY_COLORS}
    fig = Figure(figsize=(12, 3.8))
    left, right = fig.subplots(1, 2, gridspec_kw={"wspace": 0.55})
    bottom = pd.Series(0.0, index=by_model.index)
    rows = list(range(len(by_model)))  # by position: two long names cut alike stay two bars
    for cat in sorted(by_model.columns):
        left.barh(rows, by_model[cat].to_numpy(), left=bottom.to_numpy(), label=cat, color=CATEGORY_COLORS.get(cat))
        bottom += by_model[cat]
    left.set_yticks(rows, [_short(str(m)) for m in by_model.index])
    left.set_title("Flagged records by model and category")
    left.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.0, 1.0))
    right.bar(list(severity), list(severity.values()), color=list(SEVERITY_COLORS.values()))
    right.set_title("Severity mix (flagged records)")
    for ax in (left, right):
        ax.grid(alpha=0.3, axis="x" if ax is left else "y")
    return fig


def offenders_plot(off: pd.DataFrame) -> str | None:
    """Top offenders by risk, each bar coloured by the category of most of the user's flagged verdicts."""
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    if off.empty:
        return None
    top = off.sort_values("rank").head(TOP_OFFENDERS).iloc[::-1]
    dominant = [dominant_category(row) for row in top.to_dict("records")]
    fig = Figure(figsize=(11, 0.35 * len(top) + 1.2))
    ax = fig.subplots()
    # One bar per row, by position: the same pseudonym in two tenants is two offenders (two rows),
    # and bars placed by name drew them on one line.
    rows = top.to_dict("records")
    ax.barh(range(len(rows)), top["risk"], color=[CATEGORY_COLORS.get(c or "", "#57606a") for c in dominant])
    ax.set_yticks(range(len(rows)), [_offender_label(row) for row in rows])
    ax.set_title("Top offenders by decayed risk (colour: dominant category)")
    shown = sorted({c for c in dominant if c})
    if shown:
        ax.legend(handles=[Patch(color=CATEGORY_COLORS.get(c, "#57606a"), label=c) for c in shown],
                  fontsize="small", loc="lower right")
    ax.grid(alpha=0.3, axis="x")
    return _png(fig)


def _offender_label(offender: dict[str, Any]) -> str:
    """The user and, when the row is one tenant's, that tenant (cut to 40 characters)."""
    tenants = list(offender.get("tenants") if offender.get("tenants") is not None else [])
    user = str(offender.get("user_id"))
    return f"{user} ({str(tenants[0])[:40]})" if len(tenants) == 1 and tenants[0] else user


def dominant_category(offender: dict[str, Any]) -> str | None:
    """The offenders job's ``dominant_category``; outputs written before it existed fall back to
    the only category when there is exactly one (never to the alphabetically first of several)."""
    value = offender.get("dominant_category")
    if isinstance(value, str) and value:
        return value
    cats = list(offender.get("categories") if offender.get("categories") is not None else [])
    return cats[0] if len(cats) == 1 else None


def volume_tables(agg: pd.DataFrame, lake: pd.DataFrame) -> dict[str, list[dict[str, Any]]]:
    """Records, flagged and flag rate per tenant, deployment and model (aggregates, else the lake)."""
    if not agg.empty:
        base = agg[agg["category"] == "all"][["tenant_id", "deployment", "model", "records", "flagged"]]
    elif not lake.empty:
        base = lake.assign(records=1, flagged=lake["flagged"].astype(int))[
            ["tenant_id", "deployment", "model", "records", "flagged"]
        ]
    else:
        return {}
    out = {}
    for key in ("tenant_id", "deployment", "model"):
        grouped = base.fillna({key: "(none)"}).groupby(key)[["records", "flagged"]].sum()
        grouped = grouped.sort_values(["records", "flagged"], ascending=False)
        rows = [(str(name), int(r.records), int(r.flagged)) for name, r in grouped.head(TOP_VOLUMES).iterrows()]
        rest = grouped.iloc[TOP_VOLUMES:]
        if len(rest):
            rows.append((f"({len(rest):,} more)", int(rest["records"].sum()), int(rest["flagged"].sum())))
        out[key] = [{"name": name, "records": n, "flagged": f, "rate": f / n if n else None} for name, n, f in rows]
    return out


def detector_versions(lake: pd.DataFrame) -> list[dict[str, Any]]:
    """(detector, version) pairs seen in the lake's findings, with how many findings each made."""
    counts: dict[tuple[str, str], int] = {}
    if lake.empty or "findings" not in lake:
        return []
    for findings in lake["findings"]:
        for f in findings if findings is not None else ():
            # A lake of an older or another writer may lack either field, or hold null: an
            # internal error (KeyError, or None beside a name in the sort) until a hostile review
            # (2026-12-07).
            key = (f.get("detector") or "(unknown)", f.get("detector_version") or "(unknown)")
            counts[key] = counts.get(key, 0) + 1
    return [{"detector": d, "version": v, "findings": n} for (d, v), n in sorted(counts.items())]


# Kinds listed at most (dead-letter reasons, shadow changes); the rest are one row. Such a kind
# is text anyone who may write the input can set: 100,000 distinct dead-letter reasons (a header)
# made a 4.6 MB page (a hostile review, 2026-12-07).
TOP_LISTED = 50


def top_counts(values: pd.Series, what: str) -> list[tuple[str, int]]:
    """(kind, count) pairs, the most frequent first, TOP_LISTED at most plus one "other" row."""
    counts = sorted(values.astype(str).value_counts().items(), key=lambda kv: (-kv[1], kv[0]))
    if len(counts) > TOP_LISTED:
        rest = counts[TOP_LISTED:]
        counts = [*counts[:TOP_LISTED], (f"({len(rest):,} other {what})", sum(n for _, n in rest))]
    return [(_short_reason(kind), n) for kind, n in counts]


def dead_letter_counts(dead: pd.DataFrame) -> list[tuple[str, int]]:
    if dead.empty or "error_reason" not in dead:
        return []
    return top_counts(dead["error_reason"], "reasons")


def _short_reason(reason: str) -> str:
    return reason if len(reason) <= 200 else reason[:199] + "…"


def campaigns_plot(camp: pd.DataFrame) -> str | None:
    from matplotlib.figure import Figure

    if camp.empty:
        return None
    top = camp.head(TOP_CAMPAIGNS).iloc[::-1]
    fig = Figure(figsize=(11, 0.45 * len(top) + 1.2))
    ax = fig.subplots()
    y = range(len(top))
    ax.barh([i + 0.2 for i in y], top["records"], height=0.4, label="records", color="#0969da")
    ax.barh([i - 0.2 for i in y], top["users"], height=0.4, label="distinct users", color="#cf222e")
    ax.set_yticks(list(y), [_short(str(c)) for c in top["campaign_id"]])
    ax.set_title("Campaigns: size and reach")
    ax.legend()
    ax.grid(alpha=0.3, axis="x")
    return _png(fig)


def _records(df: pd.DataFrame, limit: int) -> list[dict[str, Any]]:
    rows = df.head(limit).to_dict("records")
    for row in rows:
        for key, value in row.items():
            if hasattr(value, "tolist"):  # numpy arrays from list columns
                row[key] = value.tolist()
    return rows


def _redacted_prompts(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Representative prompts with PII replaced: a report is mailed and attached to tickets.

    The campaigns job already stores them redacted and cut; this also covers outputs written
    before it did, cut the same way before redaction."""
    from pipeline.redact import representative_excerpt

    for row in rows:
        if row.get("representative_prompt"):
            row["representative_prompt"] = representative_excerpt(row["representative_prompt"])
    return rows


def _plots(inputs: ReportInputs, partial: dict[str, str]) -> dict[str, str | None]:
    """Every plot of the page, drawn with matplotlib's mathtext off: model, tenant, user and
    campaign names are data a client sets, and one named ``a$^$`` was a mathtext ValueError that
    ended the whole report (exit 1); ``$...$`` in a name is drawn as written."""
    import matplotlib

    with matplotlib.rc_context({"text.parse_math": False}):
        return {
            "trend": trend_plot(inputs.aggregates, partial),
            "mix": mix_plot(inputs.aggregates),
            "offenders": offenders_plot(inputs.offenders),
            "campaigns": campaigns_plot(inputs.campaigns),
        }


def render(inputs: ReportInputs, title: str = "misuse-monitor report", source: str = "") -> str:
    """The HTML page (a string) for the given job outputs."""
    from collections import Counter

    import pandas as pd
    from jinja2 import Environment, FileSystemLoader, select_autoescape

    from pipeline.labels import TRUSTED_PROMPTS_HINT, on_system_prompts, ranked

    env = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape(["html", "j2"]))
    env.filters["pct"] = lambda v: "n/a" if v is None or pd.isna(v) else f"{v:.1%}"
    agg = inputs.aggregates
    kpis: list[tuple[str, str]] = []
    period = ""
    if not agg.empty:
        totals = agg[agg["category"] == "all"]
        records, flagged = int(totals["records"].sum()), int(totals["flagged"].sum())
        kpis += [("records", f"{records:,}"), ("flagged", f"{flagged:,}"),
                 ("flagged share", f"{flagged / records:.1%}" if records else "n/a")]
        period = f"{agg['date'].min()} to {agg['date'].max()}"
    elif "aggregates/" in inputs.empty_outputs:
        kpis += [("records", "0"), ("flagged", "0"), ("flagged share", "n/a")]
    if not inputs.offenders.empty:
        kpis.append(("offenders ranked", str(len(inputs.offenders))))
    if not inputs.campaigns.empty:
        kpis.append(("campaigns", str(len(inputs.campaigns))))
    changes: list[tuple[str, int]] = []
    if not inputs.shadow_diff.empty:
        changes = top_counts(inputs.shadow_diff["change"], "changes")
    if inputs.accuracy is not None:
        overall = next(sc for sc in inputs.accuracy.scopes if sc.scope == "any")
        kpis += [("precision vs labels", "n/a" if overall.precision is None else f"{overall.precision:.2f}"),
                 ("recall vs labels", "n/a" if overall.recall is None else f"{overall.recall:.2f}")]
    partial = partial_days(inputs.lake)
    offenders = _records(inputs.offenders.sort_values("rank") if not inputs.offenders.empty else inputs.offenders, 25)
    for row in offenders:
        row["dominant"] = dominant_category(row)
    return env.get_template("report.html.j2").render(
        title=title,
        source=source,
        period=period,
        kpis=kpis,
        partial=partial,
        volumes=volume_tables(agg, inputs.lake),
        accuracy=inputs.accuracy,
        wrong_flags=ranked(inputs.wrong_flags or Counter()),
        trusted_prompts_hint=TRUSTED_PROMPTS_HINT if on_system_prompts(inputs.wrong_flags or Counter()) else None,
        dead_letters=dead_letter_counts(inputs.dead_letters),
        lake_given=inputs.lake_given or not inputs.lake.empty,
        empty_outputs=inputs.empty_outputs,
        alerts=inputs.alerts,
        versions=detector_versions(inputs.lake),
        category_colors=CATEGORY_COLORS,
        plots=_plots(inputs, partial),
        offenders=offenders,
        campaigns=_redacted_prompts(_records(inputs.campaigns, 25)),
        shadow_metrics=_records(inputs.shadow_metrics, 100),
        shadow_changes=changes,
    )


def build_report(
    input_dir: Path,
    output: Path,
    title: str = "misuse-monitor report",
    lake: Path | None = None,
    labels: Path | None = None,
    alerts_db: str | None = None,
    dead_letter_topic: tuple[KafkaSettings | str, str] | None = None,
) -> Path:
    """Write the page to ``output``; ``-`` writes it to stdout (the page is one file: its plots
    are embedded, so nothing else needs a place on disk)."""
    inputs = ReportInputs.load(input_dir, lake, labels, alerts_db, dead_letter_topic)
    html = render(inputs, title=title, source=str(input_dir))
    if is_dash(output):
        import sys

        # UTF-8 bytes whatever the locale says: the page declares <meta charset="utf-8">.
        sys.stdout.flush()
        buffer = getattr(sys.stdout, "buffer", None)
        if buffer is not None:
            buffer.write(html.encode("utf-8"))
            buffer.flush()
        else:
            sys.stdout.write(html)
            sys.stdout.flush()
        return output
    output.parent.mkdir(parents=True, exist_ok=True)
    # Replaced whole: a killed run leaves the previous page. Owner-only when new: the page holds
    # representative prompts (docs/spark.md: treat it like the lake); it was the umask's 0644.
    with open_output(output, private=True) as out:
        out.write(html)
    return output


def report_command(
    input_dir: Annotated[
        Path, typer.Argument(exists=True, file_okay=False, help="The --out folder of the Spark jobs")
    ],
    output: Annotated[Path, typer.Option("--output", "-o", parser=output_path_or_dash, help="HTML file to write ('-': stdout)")] = Path("report.html"),
    title: Annotated[str, typer.Option(help="Page title")] = "misuse-monitor report",
    lake: Annotated[
        Path | None,
        typer.Option(exists=True, file_okay=False, help="Verdict lake: detector versions, partial days, dead letters"),
    ] = None,
    labels: Annotated[
        Path | None, typer.Option(exists=True, dir_okay=False, help="Reviewed labels (e.g. simulate --truth); needs --lake")
    ] = None,
    alerts_db: Annotated[
        str | None, typer.Option(help="Alert database URL (alerts.db_url, e.g. sqlite:///data/alerts.db): alerts firing or resolved minutes ago, deliveries")
    ] = None,
    dead_letter_topic: Annotated[
        str | None, typer.Option(help="The stream's dead-letter topic: its reasons join the lake's (kafka.bootstrap_servers)")
    ] = None,
    bootstrap: Annotated[str | None, typer.Option(help="Kafka bootstrap servers (default: settings)")] = None,
) -> None:
    """Turn the Spark job outputs (aggregates, offenders, campaigns, shadow) into one HTML page."""
    from pipeline.exits import InputError

    # Refused up front: an option that would be ignored, or would fail after the job outputs were read.
    if bootstrap is not None and dead_letter_topic is None:
        raise typer.BadParameter("only used with --dead-letter-topic", param_hint="--bootstrap")
    if labels is not None and lake is None:
        raise typer.BadParameter("needs --lake (the verdicts to score)", param_hint="--labels")
    read = [input_dir / name for name in ("aggregates", "offenders", "campaigns", "shadow")] + ([lake] if lake else [])
    if not is_dash(output) and (same_file(output, labels) or any(_inside(output, folder) for folder in read)):
        # The page replaced the job output or labels it was to read (a hostile review,
        # 2026-12-07); classify refuses the same. Beside the job folders (INPUT_DIR/report.html) is fine.
        raise typer.BadParameter(
            f"{output} is an input of this report (a job output folder of INPUT_DIR, --lake or --labels)", param_hint="--output"
        )
    if problem := output_path_problem(output, creates_folders=True):
        # Refused before the job outputs are read: a folder was "Is a directory" (exit 4, as if an
        # input were unreadable) after all the work, a path under a file "internal error".
        raise typer.BadParameter(problem, param_hint="--output")
    topic = None
    if dead_letter_topic is not None:
        from pipeline.preflight import require_kafka
        from pipeline.settings import load_settings

        kafka = load_settings().kafka
        if bootstrap is not None:
            kafka = kafka.with_bootstrap(bootstrap)
        require_kafka(kafka)  # exit 5 within kafka.connect_timeout_s, not a client timeout after 30 s
        topic = (kafka, dead_letter_topic)
    try:
        path = build_report(input_dir, output, title, lake=lake, labels=labels, alerts_db=alerts_db, dead_letter_topic=topic)
    except ReportError as exc:
        raise InputError(str(exc)) from exc
    if str(path) != "-":  # stdout holds the page itself
        typer.echo(f"report -> {path}")


def screenshot(html: Path, png: Path, width: int = 1200, height: int = 4200, timeout_s: float = 120.0) -> Path:
    """A full-page PNG of the report rendered by headless Chromium (Debian package ``chromium``).

    Used by the tests to check that the page really renders, and to refresh docs/report.png."""
    import shutil
    import subprocess
    import tempfile

    binary = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if binary is None:
        raise ReportError("headless Chromium not found (Debian: apt-get install chromium; `make system-deps`)")
    png.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="mm-chromium-") as profile:
        subprocess.run(
            [binary, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", f"--user-data-dir={profile}",
             f"--window-size={width},{height}", f"--screenshot={png.resolve()}", html.resolve().as_uri()],
            check=True, capture_output=True, timeout=timeout_s,
        )
    return png
