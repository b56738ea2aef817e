"""Push the generated dashboards to a running Grafana through its HTTP API (grafana-client).

Per dashboard: map our fixed datasource uids to the target Grafana's, compare with what Grafana
has under the same uid, and upsert (``POST /api/dashboards/db`` with ``overwrite``) into one
folder that is created when missing. ``dry_run`` reads only and reports what would change, with
a unified diff per dashboard.

Grafana endpoints used (https://grafana.com/docs/grafana/latest/developers/http_api/):
``GET /api/datasources``, ``GET /api/folders/:uid``, ``POST /api/folders``,
``GET /api/dashboards/uid/:uid``, ``POST /api/dashboards/db``.
"""

from __future__ import annotations

import copy
import difflib
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from grafana_client import GrafanaApi
from grafana_client.client import GrafanaClientError, GrafanaException
from niquests.exceptions import ConnectionError as HttpConnectionError
from niquests.exceptions import RequestException

from dashboards.panels import POSTGRES_TYPE, POSTGRES_UID, PROMETHEUS_TYPE, PROMETHEUS_UID

DEFAULT_FOLDER_UID = "misuse-monitor"
DEFAULT_FOLDER_TITLE = "Misuse monitor"
COMMIT_MESSAGE = "misuse-monitor dashboards push"

# Our fixed uid -> the plugin types that can serve it ("postgres" is the pre-v10 plugin id).
DATASOURCE_TYPES: dict[str, tuple[str, ...]] = {
    PROMETHEUS_UID: (PROMETHEUS_TYPE,),
    POSTGRES_UID: (POSTGRES_TYPE, "postgres"),
}
# Keys Grafana manages itself; they differ between instances and are not "changes".
_VOLATILE_KEYS = ("id", "version")

Action = Literal["create", "update", "unchanged"]


class PublishError(RuntimeError):
    """The dashboards could not be pushed (datasources not found, Grafana refused a request)."""


class DatasourceError(PublishError):
    """Our datasource uids cannot be mapped to the target Grafana's (fixed with --datasource)."""


class GrafanaUnreachable(PublishError):
    """No connection to Grafana (grafana-client lets the HTTP library's ConnectionError through)."""


@dataclass(frozen=True)
class PlannedChange:
    uid: str
    title: str
    action: Action
    diff: str = ""


@dataclass
class PushReport:
    folder_uid: str
    folder_created: bool
    datasources: dict[str, str]
    changes: list[PlannedChange] = field(default_factory=list)
    dry_run: bool = False

    def summary(self) -> str:
        verb = "would" if self.dry_run else "did"
        lines = [f"folder {self.folder_uid}: {'create' if self.folder_created else 'exists'} ({verb})"]
        lines += [f"datasource {ours} -> {theirs}" for ours, theirs in sorted(self.datasources.items())]
        lines += [f"{c.action:9} {c.uid} ({c.title})" for c in self.changes]
        return "\n".join(lines)


def connect(url: str, token: str | None = None, timeout_s: float = 10.0) -> GrafanaApi:
    """A client for ``url`` (``http://user:pass@host:3000`` or a token for a service account)."""
    return GrafanaApi.from_url(url, credential=token, timeout=timeout_s)


def resolve_datasources(api: GrafanaApi, overrides: Mapping[str, str] | None = None) -> dict[str, str]:
    """Our fixed uid -> the uid to use in the target Grafana.

    An explicit override wins; else a datasource with our uid (provisioned from
    ``provisioning/datasources.yaml``); else the only datasource of the right type. Anything
    ambiguous is an error rather than a guess: a dashboard on the wrong Prometheus looks fine
    and shows the wrong numbers.
    """
    overrides = dict(overrides or {})
    unknown = set(overrides) - set(DATASOURCE_TYPES)
    if unknown:
        raise DatasourceError(f"unknown datasource uid(s) {sorted(unknown)}; ours are {sorted(DATASOURCE_TYPES)}")
    try:
        answer = api.datasource.list_datasources()
    except GrafanaException as exc:
        raise PublishError(f"listing datasources failed: {exc}") from exc
    if not isinstance(answer, list):  # a login page of a proxy in front of it, another server
        raise PublishError(f"listing datasources gave {type(answer).__name__}, not a list: is --url a Grafana?")
    # An entry without a string uid cannot be referenced by a dashboard: not a candidate.
    available = [ds for ds in answer if isinstance(ds, dict) and isinstance(ds.get("uid"), str)]
    mapping: dict[str, str] = {}
    for ours, types in DATASOURCE_TYPES.items():
        if ours in overrides:
            mapping[ours] = overrides[ours]
            continue
        if any(ds.get("uid") == ours for ds in available):
            mapping[ours] = ours
            continue
        candidates = sorted(ds["uid"] for ds in available if ds.get("type") in types)
        if len(candidates) != 1:
            found = ", ".join(candidates) or "none"
            raise DatasourceError(
                f"cannot pick a {'/'.join(types)} datasource for {ours} (found: {found}); "
                f"pass --datasource {ours}=<uid> or provision dashboards/provisioning/datasources.yaml"
            )
        mapping[ours] = candidates[0]
    return mapping


def map_datasource_uids(dashboard: Mapping[str, Any], mapping: Mapping[str, str]) -> dict[str, Any]:
    """A copy of ``dashboard`` with every ``{"type", "uid"}`` datasource reference remapped."""

    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            out = {k: walk(v) for k, v in node.items()}
            ref = out.get("datasource")
            if isinstance(ref, dict) and ref.get("uid") in mapping:
                out["datasource"] = {**ref, "uid": mapping[ref["uid"]]}
            return out
        if isinstance(node, list):
            return [walk(v) for v in node]
        return node

    return walk(copy.deepcopy(dict(dashboard)))


def _comparable(dashboard: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in dashboard.items() if k not in _VOLATILE_KEYS}


def _dump(dashboard: Mapping[str, Any]) -> list[str]:
    return json.dumps(_comparable(dashboard), sort_keys=True, indent=2).splitlines(keepends=True)


def _get_existing(api: GrafanaApi, uid: str) -> tuple[dict[str, Any], str] | None:
    """(dashboard JSON, folder uid) as Grafana has it, or None when there is no such uid."""
    try:
        found = api.dashboard.get_dashboard(uid)
    except GrafanaClientError as exc:
        if exc.status_code == 404:
            return None
        raise PublishError(f"reading dashboard {uid} failed: {exc}") from exc
    except GrafanaException as exc:
        raise PublishError(f"reading dashboard {uid} failed: {exc}") from exc
    if not isinstance(found, dict) or not isinstance(found.get("dashboard"), dict):
        raise PublishError(f"unexpected answer for dashboard {uid}: {str(found)[:200]}")
    return found["dashboard"], str((found.get("meta") or {}).get("folderUid") or "")


def plan(api: GrafanaApi, dashboards: Iterable[Mapping[str, Any]], folder_uid: str) -> list[PlannedChange]:
    """What pushing ``dashboards`` (already remapped) into ``folder_uid`` would do; reads only."""
    changes = []
    for board in dashboards:
        uid, title = str(board["uid"]), str(board.get("title", ""))
        existing = _get_existing(api, uid)
        if existing is None:
            changes.append(PlannedChange(uid, title, "create", "".join(difflib.unified_diff([], _dump(board), "grafana", "generated"))))
            continue
        current, current_folder = existing
        diff = "".join(difflib.unified_diff(_dump(current), _dump(board), f"grafana/{uid}", f"generated/{uid}"))
        if current_folder != folder_uid:
            diff = f"folder: {current_folder or '(General)'} -> {folder_uid}\n{diff}"
        changes.append(PlannedChange(uid, title, "update" if diff else "unchanged", diff))
    return changes


def _folder_exists(api: GrafanaApi, uid: str) -> bool:
    try:
        api.folder.get_folder(uid)
    except GrafanaClientError as exc:
        if exc.status_code == 404:
            return False
        raise PublishError(f"reading folder {uid} failed: {exc}") from exc
    except GrafanaException as exc:
        raise PublishError(f"reading folder {uid} failed: {exc}") from exc
    return True


def push(
    api: GrafanaApi,
    dashboards: Sequence[Mapping[str, Any]],
    *,
    folder_uid: str = DEFAULT_FOLDER_UID,
    folder_title: str = DEFAULT_FOLDER_TITLE,
    datasource_overrides: Mapping[str, str] | None = None,
    dry_run: bool = False,
) -> PushReport:
    """Upsert ``dashboards`` by uid into the folder (created when missing); see module docstring."""
    try:
        return _push(api, dashboards, folder_uid, folder_title, datasource_overrides, dry_run)
    except HttpConnectionError as exc:
        found = re.search(r"\[Errno -?\d+\] [^'\")]+", str(exc))
        raise GrafanaUnreachable(f"Grafana not reachable: {found.group(0) if found else type(exc).__name__}") from exc
    except (RequestException, json.JSONDecodeError) as exc:
        # A redirect loop (a login page), a body that is not JSON: an internal error (exit 1)
        # until 2026-12-07 (a hostile review). The type only: the text can quote the URL. Not any
        # ValueError: one of ours is a bug, and stays an internal error.
        raise PublishError(f"Grafana answered oddly ({type(exc).__name__}): is --url a Grafana?") from exc


def _push(
    api: GrafanaApi,
    dashboards: Sequence[Mapping[str, Any]],
    folder_uid: str,
    folder_title: str,
    datasource_overrides: Mapping[str, str] | None,
    dry_run: bool,
) -> PushReport:
    mapping = resolve_datasources(api, datasource_overrides)
    remapped = [map_datasource_uids(board, mapping) for board in dashboards]
    folder_missing = not _folder_exists(api, folder_uid)
    report = PushReport(folder_uid, folder_missing, mapping, plan(api, remapped, folder_uid), dry_run)
    if dry_run:
        return report
    try:
        if folder_missing:
            api.folder.create_folder(folder_title, uid=folder_uid)
        by_uid = {str(b["uid"]): b for b in remapped}
        for change in report.changes:
            if change.action == "unchanged":
                continue
            body = {**by_uid[change.uid], "id": None}  # Grafana matches on uid; ids are per instance
            api.dashboard.update_dashboard(
                {"dashboard": body, "folderUid": folder_uid, "overwrite": True, "message": COMMIT_MESSAGE}
            )
    except GrafanaException as exc:
        raise PublishError(f"pushing to Grafana failed: {exc}") from exc
    return report
