"""Dashboards as code: generated JSON is current and deterministic, every query is extractable."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from pathlib import Path

import yaml
from typer.testing import CliRunner

from dashboards import generate
from dashboards.cli import app
from dashboards.panels import POSTGRES_TYPE, PROMETHEUS_TYPE
from dashboards.queries import iter_queries, parse_label_values, render_promql, render_sql

PROVISIONING = Path(generate.__file__).parent / "provisioning"
# Per-user things live in PostgreSQL; a metric label of this kind would be unbounded.
UNBOUNDED_LABELS = re.compile(r"\b(user|user_id|request_id|session|ip)\b\s*(=~|!~|!=|=|,|\))")


def test_generated_json_is_current() -> None:
    assert generate.stale_files() == [], "run `misuse-monitor dashboards generate` and commit dashboards/generated/"


def test_check_fails_on_stale_or_leftover_files_and_generate_repairs(tmp_path: Path) -> None:
    runner = CliRunner()
    assert runner.invoke(app, ["check", "--out", str(tmp_path)]).exit_code == 11  # nothing generated yet
    assert runner.invoke(app, ["generate", "--out", str(tmp_path)]).exit_code == 0
    assert runner.invoke(app, ["check", "--out", str(tmp_path)]).exit_code == 0

    overview = tmp_path / "misuse-overview.json"
    overview.write_text(overview.read_text().replace("Flagged share", "Flagged ratio"))
    (tmp_path / "old-dashboard.json").write_text('{"uid": "mm-old"}')  # a dashboard of ours no longer generated
    assert generate.stale_files(tmp_path) == ["misuse-overview.json", "old-dashboard.json"]
    assert runner.invoke(app, ["check", "--out", str(tmp_path)]).exit_code == 11

    generate.write(tmp_path)
    assert generate.stale_files(tmp_path) == [] and not (tmp_path / "old-dashboard.json").exists()


def test_output_is_deterministic_with_sorted_keys() -> None:
    first, second = generate.rendered_files(), generate.rendered_files()
    assert first == second
    for text in first.values():
        assert text == json.dumps(json.loads(text), sort_keys=True, indent=2, ensure_ascii=False) + "\n"


def test_dashboards_have_unique_uids_and_panel_ids() -> None:
    boards = generate.all_dashboards()
    assert len({b["uid"] for b in boards}) == len(boards)
    for board in boards:
        ids = [p["id"] for p in board["panels"]]
        assert len(ids) == len(set(ids)), board["uid"]


def test_every_panel_has_an_extractable_query_on_a_provisioned_datasource() -> None:
    provisioned = {ds["uid"]: ds["type"] for ds in yaml.safe_load((PROVISIONING / "datasources.yaml").read_text())["datasources"]}
    for board in generate.all_dashboards():
        queries = list(iter_queries(board))
        titled = {q.panel for q in queries if q.kind == "panel"}
        panels = [p["title"] for p in board["panels"] if p["type"] != "row"]
        assert set(panels) == titled, f"{board['uid']}: panels without queries {set(panels) - titled}"
        for q in queries:
            assert q.query.strip(), q.label
            assert q.datasource_type in (PROMETHEUS_TYPE, POSTGRES_TYPE), q.label
        text = json.dumps(board)
        for ref in re.findall(r'"datasource": \{"type": "([^"]+)", "uid": "([^"]+)"\}', text):
            assert provisioned.get(ref[1]) == ref[0], f"{board['uid']} refers to unprovisioned datasource {ref}"


def test_overview_filters_every_query_by_tenant_deployment_and_model() -> None:
    overview = next(b for b in generate.all_dashboards() if b["uid"] == "mm-misuse-overview")
    variables = [v["name"] for v in overview["templating"]["list"]]
    assert variables == ["tenant", "deployment", "model"]
    for q in iter_queries(overview):
        if q.kind == "variable":
            continue
        # Model hopping is across models by definition, so it alone ignores $model.
        expected = ("tenant", "deployment") if q.panel == "Model hopping" else ("tenant", "deployment", "model")
        for name in expected:
            assert f"${name}" in q.query or f"${{{name}:" in q.query, f"{q.label} ignores ${name}"


def test_no_query_or_rule_uses_a_per_user_metric_label() -> None:
    for board in generate.all_dashboards():
        for q in iter_queries(board):
            if q.datasource_type == PROMETHEUS_TYPE:
                assert not UNBOUNDED_LABELS.search(q.query), q.label
    rules = (Path(generate.__file__).parent / "rules" / "misuse-monitor.rules.yml").read_text()
    assert not UNBOUNDED_LABELS.search(rules)


def test_promql_rendering_uses_all_for_variables_and_keeps_functions() -> None:
    rendered = render_promql('sum by (category) (rate(mm_flagged_total{tenant=~"$tenant"}[$__rate_interval]))', "2m")
    assert rendered == 'sum by (category) (rate(mm_flagged_total{tenant=~".*"}[2m]))'
    assert parse_label_values("label_values(mm_verdicts_total, tenant)") == ("mm_verdicts_total", "tenant")


def test_sql_rendering_expands_grafana_macros_and_regex_variables() -> None:
    start, end = datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 1, 2, tzinfo=UTC)
    sql = render_sql(
        "SELECT $__timeGroupAlias(ts, $__interval), count(*) FROM t WHERE $__timeFilter(ts) "
        "AND tenant_id ~ '^(${tenant:regex})$' AND ts < $__timeTo() GROUP BY 1",
        start,
        end,
        interval_s=300,
    )
    assert sql == (
        'SELECT floor(extract(epoch from ts)/300)*300 AS "time", count(*) FROM t '
        "WHERE ts BETWEEN '2026-01-01T00:00:00+00:00' AND '2026-01-02T00:00:00+00:00' "
        "AND tenant_id ~ '^(.*)$' AND ts < '2026-01-02T00:00:00+00:00' GROUP BY 1"
    )


def test_provisioning_points_grafana_at_the_generated_folder() -> None:
    providers = yaml.safe_load((PROVISIONING / "dashboards.yaml").read_text())["providers"]
    assert [p["folderUid"] for p in providers] == ["misuse-monitor"]


def test_generated_json_round_trips_through_the_sdk_dashboard_model() -> None:
    """The SDK's models mirror Grafana's dashboard schema: parsing and re-encoding must be lossless."""
    from grafana_foundation_sdk.cog.encoder import JSONEncoder
    from grafana_foundation_sdk.models.dashboard import Dashboard

    for name, text in generate.rendered_files().items():
        board = json.loads(text)
        assert json.loads(json.dumps(Dashboard.from_json(board), cls=JSONEncoder)) == board, name


def _boards() -> dict[str, dict]:
    return {p.name: json.loads(p.read_text()) for p in sorted((Path(generate.__file__).parent / "generated").glob("*.json"))}


def test_every_stat_panel_has_thresholds_and_the_schema_is_grafana_11() -> None:
    stats = 0
    for name, board in _boards().items():
        assert board["schemaVersion"] >= 39, f"{name}: schemaVersion {board['schemaVersion']} predates Grafana 11"
        for panel in board["panels"]:
            if panel.get("type") != "stat":
                continue
            stats += 1
            steps = panel["fieldConfig"]["defaults"]["thresholds"]["steps"]
            assert len(steps) >= 2, f"{name}: stat '{panel['title']}' has no thresholds"
            assert steps[0]["value"] is None and all(a["value"] < b["value"] for a, b in zip(steps[1:], steps[2:]))
    assert stats >= 8


def test_pipeline_health_selects_job_and_instance() -> None:
    board = _boards()["pipeline-health.json"]
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert set(variables) >= {"job", "instance"}
    assert "$job" in variables["instance"]["query"]["query"]
    stream_queries = [q.query for q in iter_queries(board) if q.kind == "panel" and "mm_kafka_" not in q.query]
    assert len(stream_queries) > 20
    unfiltered = [q for q in stream_queries if 'job=~"$job", instance=~"$instance"' not in q]
    assert unfiltered == []


def test_check_json_names_the_stale_files(tmp_path: Path) -> None:
    runner = CliRunner()
    stale = runner.invoke(app, ["check", "--out", str(tmp_path), "--json"])
    assert stale.exit_code == 11 and json.loads(stale.stdout)["up_to_date"] is False and json.loads(stale.stdout)["stale"]
    assert runner.invoke(app, ["generate", "--out", str(tmp_path)]).exit_code == 0
    fresh = runner.invoke(app, ["check", "--out", str(tmp_path), "--json"])
    assert fresh.exit_code == 0 and json.loads(fresh.stdout) == {"up_to_date": True, "stale": []}
