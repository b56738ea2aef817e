"""A local HTTP server that speaks the slice of Grafana's HTTP API that ``dashboards.publish`` uses.

Grafana itself cannot run here, so this server holds folders, dashboards and datasources in
memory and checks every request against the documented contract
(https://grafana.com/docs/grafana/latest/developers/http_api/): method and path, JSON bodies
with the documented fields and types, authentication present, and the documented status codes
and response shapes (404 for a missing folder or dashboard, 412 on a uid clash without
``overwrite``, 400 for a folder that does not exist). Anything else is recorded in
``violations`` and answered with an error, so a test fails on any undocumented call.
"""

from __future__ import annotations

import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Request:
    method: str
    path: str
    body: Any


@dataclass
class GrafanaState:
    datasources: list[dict[str, Any]] = field(default_factory=list)
    folders: dict[str, dict[str, Any]] = field(default_factory=dict)
    dashboards: dict[str, dict[str, Any]] = field(default_factory=dict)  # uid -> {"dashboard", "folderUid", "version"}
    requests: list[Request] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)
    next_id: int = 1

    def writes(self) -> list[Request]:
        return [r for r in self.requests if r.method != "GET"]


_DASHBOARD_BY_UID = re.compile(r"^/api/dashboards/uid/([A-Za-z0-9_-]{1,40})$")
_FOLDER_BY_UID = re.compile(r"^/api/folders/([A-Za-z0-9_-]{1,40})$")


class _Handler(BaseHTTPRequestHandler):
    state: GrafanaState

    def log_message(self, *args: object) -> None:  # keep pytest output clean
        pass

    # -- plumbing

    def _send(self, status: int, body: Any) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _violation(self, message: str, status: int = 400) -> None:
        self.state.violations.append(f"{self.command} {self.path}: {message}")
        self._send(status, {"message": message})

    def _read_body(self) -> Any:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        if self.command in ("POST", "PUT"):
            if not self.headers.get("Content-Type", "").startswith("application/json"):
                raise ValueError("body must be sent as application/json")
            return json.loads(raw)
        if raw:
            raise ValueError(f"{self.command} must not carry a body")
        return None

    def _dispatch(self) -> None:
        try:
            body = self._read_body()
        except ValueError as exc:
            self.state.requests.append(Request(self.command, self.path, None))
            self._violation(str(exc))
            return
        self.state.requests.append(Request(self.command, self.path, body))
        auth = self.headers.get("Authorization", "")
        if not (auth.startswith("Basic ") or auth.startswith("Bearer ")):
            self._violation("missing Basic or Bearer authentication", 401)
            return
        route = self.path.split("?", 1)[0]
        if self.command == "GET" and route == "/api/datasources":
            self._send(200, self.state.datasources)
        elif self.command == "GET" and (m := _FOLDER_BY_UID.match(route)):
            self._get_folder(m.group(1))
        elif self.command == "POST" and route == "/api/folders":
            self._create_folder(body)
        elif self.command == "GET" and (m := _DASHBOARD_BY_UID.match(route)):
            self._get_dashboard(m.group(1))
        elif self.command == "POST" and route == "/api/dashboards/db":
            self._save_dashboard(body)
        else:
            self._violation("not an endpoint of the documented API slice", 404)

    do_GET = do_POST = do_PUT = do_DELETE = _dispatch

    # -- endpoints

    def _get_folder(self, uid: str) -> None:
        folder = self.state.folders.get(uid)
        if folder is None:
            self._send(404, {"message": "folder not found", "status": "not-found"})
        else:
            self._send(200, folder)

    def _create_folder(self, body: Any) -> None:
        if not isinstance(body, dict) or not isinstance(body.get("title"), str) or not body["title"]:
            self._violation("POST /api/folders needs a non-empty string title")
            return
        unknown = set(body) - {"uid", "title", "parentUid", "description"}
        if unknown:
            self._violation(f"undocumented folder fields {sorted(unknown)}")
            return
        uid = body.get("uid") or f"f{self.state.next_id}"
        if uid in self.state.folders:
            self._send(409, {"message": "a folder with the same uid already exists"})
            return
        folder = {"id": self.state.next_id, "uid": uid, "title": body["title"], "url": f"/dashboards/f/{uid}/", "version": 1}
        self.state.next_id += 1
        self.state.folders[uid] = folder
        self._send(200, folder)

    def _get_dashboard(self, uid: str) -> None:
        stored = self.state.dashboards.get(uid)
        if stored is None:
            self._send(404, {"message": "Dashboard not found"})
            return
        folder = self.state.folders.get(stored["folderUid"], {})
        meta = {"folderUid": stored["folderUid"], "folderTitle": folder.get("title", "General"), "version": stored["version"]}
        self._send(200, {"dashboard": stored["dashboard"], "meta": meta})

    def _save_dashboard(self, body: Any) -> None:
        if not isinstance(body, dict) or not isinstance(body.get("dashboard"), dict):
            self._violation("POST /api/dashboards/db needs a dashboard object")
            return
        unknown = set(body) - {"dashboard", "folderId", "folderUid", "message", "overwrite"}
        if unknown:
            self._violation(f"undocumented fields {sorted(unknown)}")
            return
        board = body["dashboard"]
        checks = [
            (isinstance(board.get("title"), str) and board["title"], "dashboard.title must be a non-empty string"),
            (isinstance(board.get("uid"), str) and 8 <= len(board["uid"]) <= 40, "dashboard.uid must be 8-40 chars"),
            (board.get("id") is None, "dashboard.id must be null to create or match by uid"),
            (isinstance(body.get("overwrite", False), bool), "overwrite must be a boolean"),
            (isinstance(body.get("message", ""), str), "message must be a string"),
            (isinstance(body.get("folderUid", ""), str), "folderUid must be a string"),
        ]
        for ok, message in checks:
            if not ok:
                self._violation(message)
                return
        folder_uid = body.get("folderUid", "")
        if folder_uid and folder_uid not in self.state.folders:
            self._send(400, {"message": "folder not found", "status": "folder-not-found"})
            return
        known = {ds["uid"] for ds in self.state.datasources}
        missing = sorted({ref["uid"] for ref in _datasource_refs(board)} - known)
        if missing:
            self._violation(f"dashboard refers to datasources this Grafana does not have: {missing}")
            return
        uid = board["uid"]
        existing = self.state.dashboards.get(uid)
        if existing is not None and not body.get("overwrite"):
            self._send(412, {"message": "A dashboard with the same uid already exists", "status": "name-exists"})
            return
        version = (existing["version"] + 1) if existing else 1
        dash_id = existing["dashboard"]["id"] if existing else self.state.next_id
        if existing is None:
            self.state.next_id += 1
        stored = {**board, "id": dash_id, "version": version}
        self.state.dashboards[uid] = {"dashboard": stored, "folderUid": folder_uid, "version": version}
        self._send(200, {"id": dash_id, "uid": uid, "url": f"/d/{uid}/x", "status": "success", "version": version, "slug": "x"})


def _datasource_refs(node: Any) -> list[dict[str, Any]]:
    found = []
    if isinstance(node, dict):
        ref = node.get("datasource")
        if isinstance(ref, dict) and "uid" in ref:
            found.append(ref)
        for value in node.values():
            found.extend(_datasource_refs(value))
    elif isinstance(node, list):
        for value in node:
            found.extend(_datasource_refs(value))
    return found


class GrafanaApiServer:
    """``with GrafanaApiServer(state) as url:`` serves ``state`` on a free loopback port."""

    def __init__(self, state: GrafanaState) -> None:
        self.state = state
        handler = type("Handler", (_Handler,), {"state": state})
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://admin:admin@{host}:{port}"

    def __enter__(self) -> str:
        self._thread.start()
        return self.url

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
