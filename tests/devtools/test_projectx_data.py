"""Project X demo data: right row counts, intact foreign keys, deterministic, compresses like real data."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg2
import psycopg2.errors
import pytest

from devtools import projectx_data as px
from devtools.db_compare import table_checksums
from devtools.pg_cluster import TemporaryCluster

pytestmark = pytest.mark.integration
SCALE = 0.03


def _expected_counts(scale: float) -> dict[str, int]:
    counts = px.counts_for_scale(scale)
    # Items per order are a fixed hash of the order id (1..6), see _fill_sql.
    counts["order_items"] = sum(1 + (o * 2654435761) % 6 for o in range(1, counts["orders"] + 1))
    return counts


@pytest.fixture(scope="module")
def projectx(pg_cluster: TemporaryCluster) -> Iterator[str]:
    dsn = pg_cluster.create_database("projectx_test")
    yield dsn
    pg_cluster.drop_database("projectx_test")


@pytest.fixture(scope="module")
def loaded(projectx: str) -> dict[str, int]:
    return px.load_projectx(projectx, SCALE)


def _one(dsn: str, sql: str) -> Any:
    conn = psycopg2.connect(dsn)
    try:
        with conn.cursor() as cur:
            cur.execute(sql)
            return cur.fetchone()[0]
    finally:
        conn.close()


def test_row_counts(loaded: dict[str, int], projectx: str) -> None:
    expected = _expected_counts(SCALE)
    assert loaded == expected
    assert expected == {"customers": 300, "users": 900, "products": 150, "orders": 1800, "order_items": 6300}
    assert _one(projectx, "SELECT count(*) FROM order_items") == expected["order_items"]


def test_foreign_keys_are_declared_validated_and_hold(loaded: dict[str, int], projectx: str) -> None:
    fks = _one(
        projectx,
        "SELECT count(*) FROM pg_constraint WHERE contype = 'f' AND convalidated "
        "AND conrelid::regclass::text IN ('users', 'orders', 'order_items')",
    )
    assert fks == 5
    orphans = _one(
        projectx,
        """
        SELECT (SELECT count(*) FROM orders o LEFT JOIN customers c ON c.id = o.customer_id WHERE c.id IS NULL)
             + (SELECT count(*) FROM orders o LEFT JOIN users u ON u.id = o.user_id WHERE u.id IS NULL)
             + (SELECT count(*) FROM order_items i LEFT JOIN products p ON p.id = i.product_id WHERE p.id IS NULL)
             + (SELECT count(*) FROM orders o JOIN users u ON u.id = o.user_id WHERE u.customer_id <> o.customer_id)
    """,
    )
    assert orphans == 0
    conn = psycopg2.connect(projectx)
    try:
        with pytest.raises(psycopg2.errors.ForeignKeyViolation), conn.cursor() as cur:
            cur.execute(
                "INSERT INTO order_items (order_id, line_no, product_id, quantity, unit_price)"
                " VALUES (1, 99, 999999999, 1, 1)"
            )
    finally:
        conn.rollback()
        conn.close()


def test_order_totals_add_up(loaded: dict[str, int], projectx: str) -> None:
    bad = _one(
        projectx,
        """
        SELECT count(*) FROM orders o
        JOIN (SELECT order_id, sum(line_total) AS s FROM order_items GROUP BY order_id) i ON i.order_id = o.id
        WHERE o.subtotal <> i.s OR o.total <> o.subtotal + o.tax + o.shipping_cost
    """,
    )
    assert bad == 0


def test_text_is_varied_not_padding(loaded: dict[str, int], projectx: str) -> None:
    # Random prose: practically every description and note is unique, and uses many words.
    assert _one(projectx, "SELECT count(DISTINCT description) = count(*) FROM products") is True
    assert _one(projectx, "SELECT count(DISTINCT notes)::float / count(notes) FROM orders") > 0.99
    distinct_words = _one(
        projectx, "SELECT count(DISTINCT w) FROM orders, regexp_split_to_table(lower(notes), '[ .]+') w"
    )
    assert distinct_words > 300


def test_dump_compresses_like_real_data(loaded: dict[str, int], projectx: str) -> None:
    ratio = px.dump_gzip_ratio(projectx)["ratio"]
    assert 2.0 < ratio < 6.0, ratio  # pgbench-style padding would be ~100x


def test_deterministic_for_a_seed(pg_cluster: TemporaryCluster, loaded: dict[str, int], projectx: str) -> None:
    other = pg_cluster.create_database("projectx_again")
    try:
        px.load_projectx(other, SCALE)
        assert table_checksums(other) == table_checksums(projectx)
        px.load_projectx(other, SCALE, seed=0.1)  # reload replaces the tables
        assert table_checksums(other)["public.customers"] != table_checksums(projectx)["public.customers"]
    finally:
        pg_cluster.drop_database("projectx_again")


def test_size_helpers() -> None:
    assert px.scale_for_megabytes(px.MEGABYTES_PER_SCALE * 2) == 2.0
    with pytest.raises(ValueError):
        px.counts_for_scale(0)
