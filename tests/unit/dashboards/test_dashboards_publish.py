"""`dashboards push` against a local server that enforces Grafana's documented HTTP API."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from typer.testing import CliRunner

from dashboards.cli import app
from dashboards.generate import all_dashboards
from dashboards.publish import PublishError, connect, map_datasource_uids, push
from tests.unit.dashboards.grafana_api import GrafanaApiServer, GrafanaState

# The target Grafana names its datasources its own way (auto-generated uids).
PROM_UID = "PBFA97CFB590B2093"
PG_UID = "P44368ADAD746BC27"


def grafana_state(*extra: dict) -> GrafanaState:
    return GrafanaState(
        datasources=[
            {"id": 1, "uid": PROM_UID, "name": "Prometheus", "type": "prometheus", "url": "http://prom:9090", "access": "proxy"},
            {"id": 2, "uid": PG_UID, "name": "events", "type": "grafana-postgresql-datasource", "url": "pg:5432", "access": "proxy"},
            *extra,
        ]
    )


@pytest.fixture
def grafana() -> Iterator[tuple[GrafanaState, str]]:
    state = grafana_state()
    with GrafanaApiServer(state) as url:
        yield state, url


def refs(node: object) -> set[str]:
    text = json.dumps(node)
    return {uid for uid in ("mm-prometheus", "mm-postgres", PROM_UID, PG_UID) if f'"uid": "{uid}"' in text}


def test_push_creates_folder_and_dashboards_with_mapped_datasources(grafana: tuple[GrafanaState, str]) -> None:
    state, url = grafana
    boards = all_dashboards()
    report = push(connect(url), boards)

    assert state.violations == []
    assert report.folder_created and state.folders["misuse-monitor"]["title"] == "Misuse monitor"
    assert report.datasources == {"mm-prometheus": PROM_UID, "mm-postgres": PG_UID}
    assert sorted(state.dashboards) == sorted(b["uid"] for b in boards)
    for stored in state.dashboards.values():
        assert stored["folderUid"] == "misuse-monitor"
        assert refs(stored["dashboard"]) == {PROM_UID, PG_UID} or refs(stored["dashboard"]) == {PROM_UID}
    posted = [r for r in state.writes() if r.path == "/api/dashboards/db"]
    assert all(r.body["overwrite"] is True and r.body["dashboard"]["id"] is None for r in posted)


def test_second_push_changes_nothing_and_an_edit_in_grafana_is_overwritten(grafana: tuple[GrafanaState, str]) -> None:
    state, url = grafana
    api = connect(url)
    push(api, all_dashboards())
    writes_after_first = len(state.writes())

    again = push(api, all_dashboards())
    assert {c.action for c in again.changes} == {"unchanged"}
    assert len(state.writes()) == writes_after_first, "an unchanged dashboard must not be re-posted"

    # Someone edited a panel title in the UI: the next push restores the code's version.
    edited = state.dashboards["mm-pipeline-health"]["dashboard"]
    edited["panels"][1]["title"] = "hand-edited"
    plan = push(api, all_dashboards(), dry_run=True)
    changed = {c.uid: c for c in plan.changes if c.action != "unchanged"}
    assert list(changed) == ["mm-pipeline-health"]
    assert '-      "title": "hand-edited"' in changed["mm-pipeline-health"].diff
    push(api, all_dashboards())
    assert state.dashboards["mm-pipeline-health"]["dashboard"]["panels"][1]["title"] == "Stream replicas up"
    assert state.dashboards["mm-pipeline-health"]["version"] == 2
    assert state.violations == []


def test_a_dashboard_in_another_folder_is_moved_into_ours(grafana: tuple[GrafanaState, str]) -> None:
    state, url = grafana
    api = connect(url)
    push(api, all_dashboards())
    state.dashboards["mm-misuse-overview"]["folderUid"] = ""  # someone moved it to General
    plan = push(api, all_dashboards(), dry_run=True)
    moved = [c for c in plan.changes if c.action == "update"]
    assert [c.uid for c in moved] == ["mm-misuse-overview"]
    assert moved[0].diff.startswith("folder: (General) -> misuse-monitor")
    push(api, all_dashboards())
    assert state.dashboards["mm-misuse-overview"]["folderUid"] == "misuse-monitor"
    assert state.violations == []


def test_dry_run_only_reads(grafana: tuple[GrafanaState, str]) -> None:
    state, url = grafana
    report = push(connect(url), all_dashboards(), dry_run=True)
    assert report.folder_created and {c.action for c in report.changes} == {"create"}
    assert state.writes() == [] and state.dashboards == {} and state.folders == {}
    assert state.violations == []


def test_ambiguous_datasource_is_an_error_unless_mapped_explicitly() -> None:
    second = {"id": 3, "uid": "other-prom", "name": "Prometheus 2", "type": "prometheus", "url": "http://p2", "access": "proxy"}
    state = grafana_state(second)
    with GrafanaApiServer(state) as url:
        with pytest.raises(PublishError, match="mm-prometheus"):
            push(connect(url), all_dashboards())
        assert state.writes() == []
        report = push(connect(url), all_dashboards(), datasource_overrides={"mm-prometheus": "other-prom"})
    assert report.datasources["mm-prometheus"] == "other-prom"
    assert "other-prom" in json.dumps(state.dashboards["mm-misuse-overview"]["dashboard"])
    assert state.violations == []


def test_provisioned_uids_are_kept_as_they_are() -> None:
    state = GrafanaState(datasources=[
        {"id": 1, "uid": "mm-prometheus", "name": "a", "type": "prometheus", "url": "u", "access": "proxy"},
        {"id": 2, "uid": "mm-postgres", "name": "b", "type": "grafana-postgresql-datasource", "url": "u", "access": "proxy"},
        {"id": 3, "uid": "x", "name": "c", "type": "prometheus", "url": "u", "access": "proxy"},
    ])
    with GrafanaApiServer(state) as url:
        report = push(connect(url), all_dashboards())
    assert report.datasources == {"mm-prometheus": "mm-prometheus", "mm-postgres": "mm-postgres"}
    assert state.violations == []


def test_map_datasource_uids_leaves_the_input_untouched() -> None:
    board = all_dashboards()[0]
    before = json.dumps(board, sort_keys=True)
    mapped = map_datasource_uids(board, {"mm-prometheus": "P1", "mm-postgres": "P2"})
    assert json.dumps(board, sort_keys=True) == before
    assert refs(mapped) <= {PROM_UID, PG_UID} and "mm-prometheus" not in json.dumps(mapped)


def test_cli_push_dry_run_prints_plan_and_diff(grafana: tuple[GrafanaState, str]) -> None:
    state, url = grafana
    result = CliRunner().invoke(app, ["push", "--url", url, "--dry-run"])
    assert result.exit_code == 0, result.output
    assert "create    mm-misuse-overview (Misuse overview)" in result.output
    assert "+++ generated" in result.output
    assert state.writes() == []

    result = CliRunner().invoke(app, ["push", "--url", url, "--datasource", "bogus"])
    assert result.exit_code != 0


def test_cli_push_json_lists_the_changes(grafana: tuple[GrafanaState, str]) -> None:
    state, url = grafana
    result = CliRunner().invoke(app, ["push", "--url", url, "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["dry_run"] is False and doc["folder_uid"] == "misuse-monitor" and doc["folder_created"] is True
    assert doc["datasources"] == {"mm-prometheus": PROM_UID, "mm-postgres": PG_UID}
    assert sorted((c["uid"], c["action"]) for c in doc["changes"]) == sorted((uid, "create") for uid in state.dashboards)
    again = json.loads(CliRunner().invoke(app, ["push", "--url", url, "--json", "--dry-run"]).stdout)
    assert again["dry_run"] is True and {c["action"] for c in again["changes"]} == {"unchanged"}
    assert all(c["diff"] == "" for c in again["changes"])


def test_cli_push_unknown_datasource_uid_is_a_usage_error(
    grafana: tuple[GrafanaState, str], capsys: pytest.CaptureFixture[str]
) -> None:
    from pipeline.cli import main
    from pipeline.exits import ExitCode

    state, url = grafana
    code = main(["dashboards", "push", "--url", url, "--datasource", "mm-nope=P1"])
    [line] = capsys.readouterr().err.strip().splitlines()
    assert code == ExitCode.USAGE and "unknown datasource uid(s) ['mm-nope']" in line and "--datasource" in line
    assert state.writes() == []
