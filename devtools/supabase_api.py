"""A local stand-in for Supabase's Management API (real HTTP on 127.0.0.1), for tests and demos.

It answers ``GET /v1/projects/{ref}/database/backups`` with the documented response shape
(``V1BackupsResponse``) and ``POST /v1/projects/{ref}/database/backups/restore-pitr``
(``{"recovery_time_target_unix": <seconds>}``: 201 inside the project's PITR window, 400
outside it or without PITR; accepted restores are kept in ``pitr_restores``), and can be
scripted to answer errors, rate limits (429 with or without ``Retry-After``), slow answers or
garbage, in order::

    with SupabaseApiStub(token="sbp_test") as api:
        api.projects["abcdefghijklmnopqrst"] = backups_payload(now, daily=7)
        api.script(Answer(429, headers={"Retry-After": "1"}))   # the next request is rate limited
        client = SupabaseManagementClient("sbp_test", ManagementApiSettings(base_url=api.url))
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from devtools.services import HOST, _HttpThread

_PATH = "/v1/projects/"
_SUFFIX = "/database/backups"
_PITR_SUFFIX = "/database/backups/restore-pitr"


@dataclass
class Answer:
    """One scripted answer: status, JSON body (or raw bytes), headers, and a delay before it."""

    status: int = 200
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    raw: bytes | None = None


@dataclass(frozen=True)
class ReceivedRequest:
    path: str
    authorization: str | None
    method: str = "GET"
    body: Any = None


def backups_payload(
    now: datetime,
    *,
    daily: int = 7,
    newest_age: timedelta = timedelta(hours=3),
    pitr: bool = False,
    latest_status: str = "COMPLETED",
    pitr_lag: timedelta = timedelta(minutes=2),
) -> dict[str, Any]:
    """A documented-shape answer: ``daily`` backups a day apart, the newest ``newest_age`` old."""
    backups = []
    for day in range(daily):
        moment = now - newest_age - timedelta(days=day)
        backups.append(
            {
                "is_physical_backup": True,
                "status": latest_status if day == 0 else "COMPLETED",
                "inserted_at": moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            }
        )
    physical: dict[str, int] = {}
    if pitr:
        physical = {
            "earliest_physical_backup_date_unix": int((now - timedelta(days=7)).timestamp()),
            "latest_physical_backup_date_unix": int((now - pitr_lag).timestamp()),
        }
    return {
        "region": "eu-central-1",
        "walg_enabled": True,
        "pitr_enabled": pitr,
        "backups": backups,
        "physical_backup_data": physical,
    }


class _Handler(BaseHTTPRequestHandler):
    server: ThreadingHTTPServer

    def do_GET(self) -> None:
        owner: SupabaseApiStub = self.server.owner  # type: ignore[attr-defined]
        auth = self.headers.get("Authorization")
        owner._record(ReceivedRequest(self.path, auth))
        self._answer(owner._next_answer(self.path, auth))

    def do_POST(self) -> None:
        owner: SupabaseApiStub = self.server.owner  # type: ignore[attr-defined]
        auth = self.headers.get("Authorization")
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = raw
        owner._record(ReceivedRequest(self.path, auth, "POST", body))
        self._answer(owner._post_answer(self.path, auth, body, self.headers.get("Content-Type")))

    def _answer(self, answer: Answer) -> None:
        if answer.delay:
            time.sleep(answer.delay)
        body = (
            answer.raw
            if answer.raw is not None
            else b""
            if answer.body is None and answer.status == 201
            else json.dumps(answer.body).encode()
        )
        try:
            self.send_response(answer.status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            for name, value in answer.headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (its timeout): nothing to answer

    def log_message(self, format: str, *args: Any) -> None:
        pass


class SupabaseApiStub(_HttpThread):
    """Management API stand-in. ``projects`` maps a ref to its backups payload."""

    def __init__(self, token: str = "sbp_test_token") -> None:
        super().__init__(_Handler)
        self.token = token
        self.projects: dict[str, Any] = {}
        self._scripted: list[Answer] = []
        self._requests: list[ReceivedRequest] = []
        self.pitr_restores: list[tuple[str, int]] = []  # (ref, recovery_time_target_unix) accepted
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def requests(self) -> list[ReceivedRequest]:
        with self._lock:
            return list(self._requests)

    def script(self, *answers: Answer) -> None:
        """Answer the next requests with these, in order, before the normal answers resume."""
        with self._lock:
            self._scripted.extend(answers)

    def _record(self, request: ReceivedRequest) -> None:
        with self._lock:
            self._requests.append(request)

    def _next_answer(self, path: str, auth: str | None) -> Answer:
        with self._lock:
            if self._scripted:
                return self._scripted.pop(0)
        if auth != f"Bearer {self.token}":
            return Answer(401, {"message": "Unauthorized"})
        if not (path.startswith(_PATH) and path.endswith(_SUFFIX)):
            return Answer(404, {"message": "Cannot GET " + path})
        ref = path[len(_PATH) : -len(_SUFFIX)]
        if ref not in self.projects:
            return Answer(404, {"message": "Project not found"})
        return Answer(200, self.projects[ref])

    def _post_answer(self, path: str, auth: str | None, body: Any, content_type: str | None) -> Answer:
        with self._lock:
            if self._scripted:
                return self._scripted.pop(0)
        if auth != f"Bearer {self.token}":
            return Answer(401, {"message": "Unauthorized"})
        if not (path.startswith(_PATH) and path.endswith(_PITR_SUFFIX)):
            return Answer(404, {"message": "Cannot POST " + path})
        ref = path[len(_PATH) : -len(_PITR_SUFFIX)]
        if ref not in self.projects:
            return Answer(404, {"message": "Project not found"})
        if content_type != "application/json" or not isinstance(body, dict):
            return Answer(400, {"message": "Body must be JSON"})
        target = body.get("recovery_time_target_unix")
        if isinstance(target, bool) or not isinstance(target, int) or target < 0:
            return Answer(400, {"message": "recovery_time_target_unix must be a non-negative integer"})
        project = self.projects[ref]
        window = project.get("physical_backup_data") or {}
        earliest, latest = (
            window.get("earliest_physical_backup_date_unix"),
            window.get("latest_physical_backup_date_unix"),
        )
        if not project.get("pitr_enabled") or earliest is None or latest is None:
            return Answer(400, {"message": "Point in time recovery is not enabled for this project"})
        if not earliest <= target <= latest:
            return Answer(400, {"message": "recovery_time_target_unix is outside the available PITR window"})
        with self._lock:
            self.pitr_restores.append((ref, target))
        return Answer(201, None)
