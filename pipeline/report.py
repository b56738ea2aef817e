"""``misuse-monitor report``: the Spark job outputs as one self-contained HTML page.

Reads ``<input>/aggregates``, ``offenders``, ``campaigns`` and ``shadow`` (any may be
missing; its section then says how to produce it) and writes a single HTML file with the
plots embedded as base64 PNG: no scripts, no external assets, so it can be mailed or
attached to a ticket. Plots use matplotlib's object API (no pyplot global state) and PNGs
are written without a timestamp, so the same inputs give the same page.
"""

from __future__ import annotations

import base64
import io
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.figure import Figure

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


class ReportError(RuntimeError):
    """The report could not be built (no job output found, unreadable files)."""


@dataclass
class ReportInputs:
    """The job outputs a report is built from (None or empty when a job was not run)."""

    aggregates: pd.DataFrame | None = None
    offenders: pd.DataFrame | None = None
    campaigns: pd.DataFrame | None = None
    shadow_diff: pd.DataFrame | None = None
    shadow_metrics: pd.DataFrame | None = None

    def __post_init__(self) -> None:
        import pandas as pd

        for f in fields(self):
            if getattr(self, f.name) is None:
                setattr(self, f.name, pd.DataFrame())

    @classmethod
    def load(cls, root: Path) -> ReportInputs:
        inputs = cls(
            aggregates=_read(root / "aggregates"),
            offenders=_read(root / "offenders"),
            campaigns=_read(root / "campaigns"),
            shadow_diff=_read(root / "shadow" / "diff"),
            shadow_metrics=_read(root / "shadow" / "metrics"),
        )
        if all(getattr(inputs, f.name).empty for f in fields(inputs)):
            raise ReportError(f"no job output under {root} (expected aggregates/, offenders/, campaigns/ or shadow/)")
        return inputs


def _read(path: Path) -> pd.DataFrame:
    import pandas as pd
    import pyarrow.parquet as pq

    if not path.is_dir() or not any(path.glob("*.parquet")):
        return pd.DataFrame()
    try:
        return pq.read_table(path).to_pandas()
    except OSError as exc:
        raise ReportError(f"cannot read {path}: {exc}") from exc


def _png(fig: Figure) -> str:
    buf = io.BytesIO()
    # metadata={"Software": None} drops matplotlib's version stamp: deterministic bytes.
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight", metadata={"Software": None})
    return base64.b64encode(buf.getvalue()).decode("ascii")


def trend_plot(agg: pd.DataFrame) -> str | None:
    """Daily records and flagged records (left), flagged share per category (right)."""
    import pandas as pd
    from matplotlib.figure import Figure
    from matplotlib.ticker import PercentFormatter

    if agg.empty:
        return None
    totals = agg[agg["category"] == "all"].groupby("date")[["records", "flagged"]].sum().sort_index()
    per_cat = agg[agg["category"] != "all"].pivot_table(index="date", columns="category", values="records", aggfunc="sum")
    per_cat = per_cat.reindex(totals.index).fillna(0)
    fig = Figure(figsize=(11, 3.8))
    left, right = fig.subplots(1, 2)
    x = pd.to_datetime(totals.index)
    left.plot(x, totals["records"], marker="o", label="records", color="#57606a")
    left.plot(x, totals["flagged"], marker="o", label="flagged", color="#cf222e")
    left.set_title("Daily volume")
    left.legend()
    for cat in sorted(per_cat.columns):
        right.plot(x, per_cat[cat] / totals["records"], marker="o", label=cat, color=CATEGORY_COLORS.get(cat))
    right.set_title("Flagged share by category")
    right.yaxis.set_major_formatter(PercentFormatter(xmax=1.0, decimals=1))
    if len(per_cat.columns):
        right.legend()
    for ax in (left, right):
        ax.tick_params(axis="x", labelrotation=30)
        ax.grid(alpha=0.3)
    return _png(fig)


def mix_plot(agg: pd.DataFrame) -> str | None:
    """Flagged records per model split by category (left) and severity mix (right)."""
    import pandas as pd
    from matplotlib.figure import Figure

    if agg.empty:
        return None
    cats = agg[agg["category"] != "all"]
    if cats.empty:
        return None
    by_model = cats.pivot_table(index="model", columns="category", values="records", aggfunc="sum").fillna(0)
    totals = agg[agg["category"] == "all"]
    severity = {s: int(totals[f"severity_{s}"].sum()) for s in SEVERITY_COLORS}
    fig = Figure(figsize=(12, 3.8))
    left, right = fig.subplots(1, 2, gridspec_kw={"wspace": 0.55})
    bottom = pd.Series(0.0, index=by_model.index)
    for cat in sorted(by_model.columns):
        left.barh(by_model.index, by_model[cat], left=bottom, label=cat, color=CATEGORY_COLORS.get(cat))
        bottom += by_model[cat]
    left.set_title("Flagged records by model and category")
    left.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.0, 1.0))
    right.bar(list(severity), list(severity.values()), color=list(SEVERITY_COLORS.values()))
    right.set_title("Severity mix (flagged records)")
    for ax in (left, right):
        ax.grid(alpha=0.3, axis="x" if ax is left else "y")
    return _png(fig)


def offenders_plot(off: pd.DataFrame) -> str | None:
    from matplotlib.figure import Figure

    if off.empty:
        return None
    top = off.sort_values("rank").head(TOP_OFFENDERS).iloc[::-1]
    fig = Figure(figsize=(11, 0.35 * len(top) + 1.2))
    ax = fig.subplots()
    colors = [CATEGORY_COLORS.get(c[0] if len(c) else "", "#57606a") for c in top["categories"]]
    ax.barh(top["user_id"], top["risk"], color=colors)
    ax.set_title("Top offenders by decayed risk (colour: first category)")
    ax.grid(alpha=0.3, axis="x")
    return _png(fig)


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
    ax.set_yticks(list(y), list(top["campaign_id"]))
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

    The campaigns job already stores them redacted; this also covers outputs written before it did."""
    from pipeline.redact import redact

    for row in rows:
        if row.get("representative_prompt"):
            row["representative_prompt"] = redact(row["representative_prompt"])
    return rows


def render(inputs: ReportInputs, title: str = "misuse-monitor report", source: str = "") -> str:
    """The HTML page (a string) for the given job outputs."""
    import pandas as pd
    from jinja2 import Environment, FileSystemLoader, select_autoescape

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
    if not inputs.offenders.empty:
        kpis.append(("offenders ranked", str(len(inputs.offenders))))
    if not inputs.campaigns.empty:
        kpis.append(("campaigns", str(len(inputs.campaigns))))
    changes: list[tuple[str, int]] = []
    if not inputs.shadow_diff.empty:
        changes = sorted(inputs.shadow_diff["change"].value_counts().items())
    return env.get_template("report.html.j2").render(
        title=title,
        source=source,
        period=period,
        kpis=kpis,
        plots={
            "trend": trend_plot(agg),
            "mix": mix_plot(agg),
            "offenders": offenders_plot(inputs.offenders),
            "campaigns": campaigns_plot(inputs.campaigns),
        },
        offenders=_records(inputs.offenders.sort_values("rank") if not inputs.offenders.empty else inputs.offenders, 25),
        campaigns=_redacted_prompts(_records(inputs.campaigns, 25)),
        shadow_metrics=_records(inputs.shadow_metrics, 100),
        shadow_changes=changes,
    )


def build_report(input_dir: Path, output: Path, title: str = "misuse-monitor report") -> Path:
    html = render(ReportInputs.load(input_dir), title=title, source=str(input_dir))
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(html, encoding="utf-8")
    return output


def report_command(
    input_dir: Annotated[
        Path, typer.Argument(exists=True, file_okay=False, help="The --out folder of the Spark jobs")
    ],
    output: Annotated[Path, typer.Option("--output", "-o", help="HTML file to write")] = Path("report.html"),
    title: Annotated[str, typer.Option(help="Page title")] = "misuse-monitor report",
) -> None:
    """Turn the Spark job outputs (aggregates, offenders, campaigns, shadow) into one HTML page."""
    try:
        path = build_report(input_dir, output, title)
    except ReportError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc
    typer.echo(f"report -> {path}")
