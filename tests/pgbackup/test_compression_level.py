"""The configured compression level reaches the compressor, on both data paths.

Catches the mutation "the configured compression level never reaching zstd" (issue 7,
item 14). The same dump bytes compressed at the lowest and a high level must differ, and
the gzip header's XFL byte must say which level the compressor was told.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from devtools.gpg_keys import GeneratedKey
from devtools.pg_cluster import TemporaryCluster
from pgbackup import backup
from pgbackup.config import CompressionConfig
from pgbackup.pgconn import PgConnInfo
from pgbackup.storage import open_storage
from tests.pgbackup.conftest import make_request

pytestmark = pytest.mark.integration

LEVELS = {"zstd": (1, 19), "gzip": (1, 9)}
GZIP_XFL = {1: 4, 9: 2}  # RFC 1952: XFL 2 = maximum compression, 4 = fastest
# Repetitive rows with long-range structure: a higher level finds far more of it.
ROWS_SQL = (
    "CREATE TABLE events (id int PRIMARY KEY, kind text, payload text); "
    "INSERT INTO events SELECT g, (ARRAY['login','logout','purchase','refund'])[1 + g % 4], "
    "repeat(md5((g % 500)::text), 4) || ' user ' || (g % 977) FROM generate_series(1, 15000) g"
)


def _load(cluster: TemporaryCluster, source: PgConnInfo) -> None:
    cluster.execute(ROWS_SQL, dbname=source.dbname)


@pytest.mark.parametrize("algorithm", ["zstd", "gzip"])
def test_staged_compression_uses_the_configured_level(
    algorithm: str,
    pg_cluster: TemporaryCluster,
    source_db: PgConnInfo,
    gpg_key: GeneratedKey,
    tmp_path: Path,
) -> None:
    _load(pg_cluster, source_db)
    low, high = LEVELS[algorithm]
    first = tmp_path / "low"
    second = tmp_path / "high"
    first.mkdir()
    manifest = backup.dump_to_file(make_request(source_db, gpg_key), first)
    second.mkdir()
    shutil.copy2(first / backup.DUMP_FILE, second / backup.DUMP_FILE)  # the very same input bytes

    sizes: dict[int, int] = {}
    for level, workdir in ((low, first), (high, second)):
        config = CompressionConfig(algorithm=algorithm, level=level)
        compressed = backup.compress_file(manifest, config, workdir)
        assert compressed.artifact["compression"] == {"algorithm": algorithm, "level": level}
        output = workdir / backup.COMPRESSED_FILE
        sizes[level] = output.stat().st_size
        if algorithm == "gzip":
            assert output.read_bytes()[8] == GZIP_XFL[level], f"gzip header says another level than {level}"
    # Identical input: only the level can make these differ.
    assert sizes[high] < sizes[low] * 0.95, sizes


def test_stream_compression_uses_the_configured_level(
    pg_cluster: TemporaryCluster, source_db: PgConnInfo, gpg_key: GeneratedKey, tmp_path: Path
) -> None:
    _load(pg_cluster, source_db)
    sizes: dict[int, int] = {}
    for level in LEVELS["zstd"]:
        (tmp_path / f"backups{level}").mkdir()
        storage = open_storage(f"file://{tmp_path}/backups{level}")  # one each: no same-second key question
        config = CompressionConfig(algorithm="zstd", level=level)
        manifest = backup.stream_backup(make_request(source_db, gpg_key, compression=config), storage, "local")
        assert manifest.artifact["compression"]["level"] == level
        sizes[level] = manifest.size
    # Two dumps of the same data differ by a few header bytes; the levels differ by far more.
    assert sizes[19] < sizes[1] * 0.95, sizes
