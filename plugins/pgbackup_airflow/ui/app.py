"""The Backups page's API and page, mounted by the plugin at ``/pgbackup`` on Airflow's API server.

Plugin apps are not protected by Airflow by default, so every route here depends on
Airflow's own authorization dependencies (``airflow.api_fastapi.core_api.security``):
reading needs read access to every backup DAG, the restore form needs the right to trigger
``pg_restore_manual``. A request without a valid token gets 401 (none) or 403 (invalid, or
not allowed). Storage is read through the engine's ``CatalogView`` in a worker thread, never
on the event loop; nothing returned holds a password, a key or a presigned URL.
"""

from __future__ import annotations

import logging
import os
import threading
from datetime import datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

from airflow.api_fastapi.app import get_auth_manager
from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity, DagDetails
from airflow.api_fastapi.core_api.security import GetUserDep, requires_access_dag
from fastapi import Depends, FastAPI, HTTPException, Query
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, JSONResponse, Response

from pgbackup.catalog_view import CatalogView, ViewDestination
from pgbackup.config import TIERS, PgBackupConfig, load_config
from pgbackup.errors import PgBackupError

log = logging.getLogger(__name__)

URL_PREFIX = "/pgbackup"
# The DAGs whose backups the page shows (dag_factory's ids) and the one "Restore this" triggers.
BACKUP_DAG_IDS = {"daily": "pg_backup_daily", "weekly": "pg_backup_weekly", "monthly": "pg_backup_monthly"}
RESTORE_DAG_ID = "pg_restore_manual"
EXACT_ID = "exact_id"  # pg_restore_manual's ``backup`` choice for one backup id
TTL_SECONDS = float(os.environ.get("PGBACKUP_UI_TTL_SECONDS", "30"))
PAGE = Path(__file__).with_name("page.html")
NO_STORE = {"Cache-Control": "no-store"}
# A monthly report is our own HTML, but shown as a document that may run nothing.
REPORT_CSP = "sandbox; default-src 'none'; style-src 'unsafe-inline'; img-src data:"

CanRead = [Depends(requires_access_dag("GET", param_dag_id=dag_id)) for dag_id in BACKUP_DAG_IDS.values()]
CanRestore = [
    *CanRead,
    Depends(requires_access_dag("POST", DagAccessEntity.RUN, param_dag_id=RESTORE_DAG_ID)),
]


class _Views:
    """One CatalogView per API-server process, built from the config on first use (no I/O at import)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._view: CatalogView | None = None
        self._config: PgBackupConfig | None = None

    def get(self) -> tuple[CatalogView, PgBackupConfig]:
        with self._lock:
            if self._view is None or self._config is None:
                self._config = load_config()
                self._view = build_view(self._config)
            return self._view, self._config

    def set(self, view: CatalogView, config: PgBackupConfig) -> None:
        with self._lock:
            self._view, self._config = view, config


views = _Views()


def build_view(config: PgBackupConfig, ttl: float = TTL_SECONDS) -> CatalogView:
    from pgbackup_airflow.connections import open_destination

    destinations = [
        ViewDestination(d.name, open_destination(d, config.timeouts), bool(d.primary), tuple(d.kinds))
        for d in config.destinations
    ]
    rpo = {tier: timedelta(hours=config.monitor.rpo_hours.hours_for(tier)) for tier in TIERS}
    return CatalogView(destinations, [t.name for t in config.targets], rpo, ttl=ttl)


async def _call(function: Any, *args: Any, **kwargs: Any) -> Any:
    """Run a storage-reading call in a worker thread; engine errors become a clear 502/400."""
    try:
        return await run_in_threadpool(function, *args, **kwargs)
    except ValueError as exc:
        raise HTTPException(400, str(exc)) from None
    except PgBackupError as exc:
        log.warning("backups page: %s", exc)
        raise HTTPException(502, f"storage could not be read: {exc}") from None


def _view() -> CatalogView:
    return views.get()[0]


def _run_of(row: dict[str, Any], logical_date: str | None) -> dict[str, Any] | None:
    """The Airflow run that made this backup: by its logical date, else the run of the tier's
    DAG that was running when the dump started (manual runs have no logical date)."""
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session
    from sqlalchemy import or_, select

    dag_id = BACKUP_DAG_IDS.get(row["tier"])
    if dag_id is None:
        return None
    created = datetime.fromisoformat(row["created_at"].replace("Z", "+00:00"))
    query = select(DagRun.dag_id, DagRun.run_id).where(DagRun.dag_id == dag_id)
    if logical_date:
        query = query.where(DagRun.logical_date == datetime.fromisoformat(logical_date))
    else:
        query = query.where(
            DagRun.start_date <= created + timedelta(minutes=1),
            or_(DagRun.end_date.is_(None), DagRun.end_date >= created),
        )
    with create_session() as session:
        found = session.execute(query.order_by(DagRun.start_date.desc()).limit(1)).first()
    if found is None:
        return {"dag_id": dag_id, "run_id": None, "url": f"/dags/{dag_id}/runs"}
    return {"dag_id": found.dag_id, "run_id": found.run_id, "url": f"/dags/{found.dag_id}/runs/{found.run_id}"}


def create_app() -> FastAPI:
    app = FastAPI(
        title="pgbackup Backups",
        description="Backups, their verification and restores, read from the destinations' manifests.",
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )

    @app.get("/", dependencies=CanRead, response_class=HTMLResponse)
    def page() -> HTMLResponse:  # sync: FastAPI runs it in a worker thread
        view = _view()
        if not view.has_snapshot():
            view.refresh_in_background()  # the page's API calls follow within a second
        return HTMLResponse(PAGE.read_text(), headers=NO_STORE)

    @app.get("/api/overview", dependencies=CanRead)
    async def overview(refresh: bool = False) -> JSONResponse:
        view = await run_in_threadpool(_view)
        if refresh:  # the page's Refresh button: read storage now instead of serving the snapshot
            await _call(view.snapshot, True)
        return JSONResponse(await _call(view.overview), headers=NO_STORE)

    @app.get("/api/backups", dependencies=CanRead)
    async def backups(
        target: Annotated[str | None, Query()] = None,
        tier: Annotated[str | None, Query()] = None,
        kind: Annotated[str | None, Query()] = None,
        state: Annotated[str | None, Query()] = None,
        page: Annotated[int, Query(ge=1)] = 1,
        page_size: Annotated[int, Query(ge=1, le=500)] = 50,
    ) -> JSONResponse:
        view = await run_in_threadpool(_view)
        found = await _call(
            view.backups,
            target=target or None,
            tier=tier or None,
            kind=kind or None,
            state=state or None,
            page=page,
            page_size=page_size,
        )
        return JSONResponse(found, headers=NO_STORE)

    @app.get("/api/backups/{backup_id}", dependencies=CanRead)
    async def backup(backup_id: str) -> JSONResponse:
        view = await run_in_threadpool(_view)
        detail = await _call(view.detail, backup_id)
        if detail is None:
            raise HTTPException(404, f"no backup {backup_id!r} in any destination")
        try:
            detail["run"] = await run_in_threadpool(_run_of, detail, detail.get("logical_date"))
        except Exception as exc:  # noqa: BLE001 - the link is a convenience; the detail stands without it
            log.warning("backups page: could not find the run of %s: %s", backup_id, exc)
            detail["run"] = None
        return JSONResponse(detail, headers=NO_STORE)

    @app.get("/api/backups/{backup_id}/restore", dependencies=CanRestore)
    async def restore_form(backup_id: str) -> JSONResponse:
        """pg_restore_manual's conf for exactly this backup, read from a destination holding a verified copy."""
        view, config = await run_in_threadpool(views.get)
        found = await _call(view.find, backup_id)
        if found is None:
            raise HTTPException(404, f"no backup {backup_id!r} in any destination")
        manifest, copies = found
        verified = [d.name for d, m in copies if m.verified]
        holding = verified or [d.name for d, _ in copies]
        primary = config.primary.name
        conf = {
            "target": manifest.target,
            "backup": EXACT_ID,
            "backup_id": manifest.backup_id,
            "destination": primary if primary in holding else holding[0],
        }
        return JSONResponse(
            {"dag_id": RESTORE_DAG_ID, "conf": conf, "verified": bool(verified), "dag_url": f"/dags/{RESTORE_DAG_ID}"},
            headers=NO_STORE,
        )

    @app.get("/api/reports", dependencies=CanRead)
    async def reports() -> JSONResponse:
        view = await run_in_threadpool(_view)
        return JSONResponse({"reports": await _call(view.reports)}, headers=NO_STORE)

    @app.get("/reports/{name}", dependencies=CanRead)
    async def report(name: str) -> Response:
        view = await run_in_threadpool(_view)
        body = await _call(view.report, name)
        if body is None:
            raise HTTPException(404, f"no report {name!r}")
        return Response(
            body, media_type="text/html; charset=utf-8", headers={**NO_STORE, "Content-Security-Policy": REPORT_CSP}
        )

    @app.get("/api/permissions", dependencies=CanRead)
    async def permissions(can_restore: Annotated[bool, Depends(_can_restore)]) -> JSONResponse:
        return JSONResponse({"read": True, "restore": can_restore}, headers=NO_STORE)

    return app


def _can_restore(user: GetUserDep) -> bool:
    """Whether to show "Restore this" (the restore route checks again, and so does Airflow on trigger)."""
    return bool(
        get_auth_manager().is_authorized_dag(
            method="POST", access_entity=DagAccessEntity.RUN, details=DagDetails(id=RESTORE_DAG_ID), user=user
        )
    )


app = create_app()
