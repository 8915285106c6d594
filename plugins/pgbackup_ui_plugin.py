"""Registers the Backups page: a FastAPI app at ``/pgbackup`` and a top-level "Backups" nav entry.

Airflow 3's plugin API (no Flask, no FAB): the app runs inside the API server, and the
external view shows it in the UI's navigation (in an iframe, same origin, so the Airflow
login cookie authenticates it). The app itself enforces Airflow's authorization on every route.
"""

from __future__ import annotations

from urllib.parse import quote

from airflow.plugins_manager import AirflowPlugin

from pgbackup_airflow.ui.app import URL_PREFIX, app

# A database cylinder with a check mark, in the UI's icon size; a data URI so it needs no route.
_SVG = (
    "<svg xmlns='http://www.w3.org/2000/svg' viewBox='0 0 24 24' fill='none' stroke='#{color}' "
    "stroke-width='2' stroke-linecap='round' stroke-linejoin='round'>"
    "<ellipse cx='11' cy='5' rx='8' ry='3'/><path d='M3 5v6c0 1.66 3.58 3 8 3'/>"
    "<path d='M3 11v6c0 1.66 3.58 3 8 3'/><path d='M19 5v5'/><path d='m15 18 2 2 4-4'/></svg>"
)


def _icon(color: str) -> str:
    return "data:image/svg+xml," + quote(_SVG.format(color=color))


class PgBackupUiPlugin(AirflowPlugin):
    name = "pgbackup_ui"
    fastapi_apps = [{"app": app, "url_prefix": URL_PREFIX, "name": "pgbackup backups"}]
    external_views = [
        {
            "name": "Backups",
            "href": f"{URL_PREFIX.lstrip('/')}/",  # relative: resolved against the UI's base URL
            "url_route": "backups",
            "destination": "nav",
            "nav_top_level": True,
            "icon": _icon("7d93b2"),  # readable on the nav's light background and on its dark selection
            "icon_dark_mode": _icon("cbd5e0"),
        }
    ]
