"""Storage backends behind one contract (see ``base.Storage``), chosen by URL scheme.

Backend modules are imported only when their scheme is used (the barman
``cloud_providers`` pattern), so a local-only install needs neither boto3 nor
google-cloud-storage.
"""

from __future__ import annotations

import importlib
import inspect
from typing import Any
from urllib.parse import urlsplit

from pgbackup.errors import ConfigError
from pgbackup.storage.base import ObjectInfo, Storage, UploadResult

__all__ = ["EXPECTED_URL_FORMS", "ObjectInfo", "Storage", "UploadResult", "open_storage"]

EXPECTED_URL_FORMS = "file:///absolute/path, s3://bucket[/prefix] or gs://bucket[/prefix]"

# (scheme, flavor) -> (module, class); flavor=None is the plain backend.
_BACKENDS: dict[tuple[str, str | None], tuple[str, str]] = {
    ("file", None): ("pgbackup.storage.local", "LocalStorage"),
    ("s3", None): ("pgbackup.storage.s3", "S3Storage"),
    ("s3", "supabase_storage"): ("pgbackup.storage.s3", "SupabaseStorage"),
    ("gs", None): ("pgbackup.storage.gcs", "GcsStorage"),
}


def open_storage(url: str, **options: Any) -> Storage:
    """Open the backend for ``url``; does no I/O (clients are created on first use).

    ``flavor="supabase_storage"`` selects Supabase Storage's S3 endpoint for ``s3://`` URLs.
    Other options go to the backend's constructor (e.g. ``client=``, ``part_size=``).
    """
    flavor = options.pop("flavor", None)
    scheme = urlsplit(url).scheme if isinstance(url, str) else ""
    if not isinstance(url, str) or "://" not in url or (scheme, None) not in _BACKENDS:
        raise ConfigError(f"unsupported storage URL {url!r}: expected {EXPECTED_URL_FORMS}")
    if (scheme, flavor) not in _BACKENDS:
        known = sorted(f for s, f in _BACKENDS if s == scheme and f)
        raise ConfigError(f"storage URL {url!r}: unknown flavor {flavor!r} for {scheme}:// (known: {known})")
    module_name, class_name = _BACKENDS[(scheme, flavor)]
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"storage URL {url!r} needs a package that is not installed: {exc}") from exc
    backend: type[Storage] = getattr(module, class_name)
    try:
        inspect.signature(backend).bind(url, **options)
        return backend(url, **options)  # constructors only validate; an unknown option is a TypeError
    except TypeError as exc:
        raise ConfigError(f"storage URL {url!r}: invalid options for {class_name}: {exc}") from None
