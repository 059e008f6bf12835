"""The SQL source against a real PostgreSQL (127.0.0.1:5432 by default; PRIVGEN_TEST_PG_URL).

Each test run creates and drops its own uniquely named table.
"""

from __future__ import annotations

import os
import secrets

import pandas as pd
import pytest
import sqlalchemy as sa

from tasks.contract import ColumnSpec, DataContract, DType, Role
from tasks.errors import InputError
from tasks.ingest import SOURCE_LINE, SOURCE_ROW, IngestConfig, SqlSource, ingest
from tasks.validate import ValidateConfig, validate_parquet

pytestmark = pytest.mark.integration
URL = os.environ.get("PRIVGEN_TEST_PG_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/test")
ROWS = 2_500


@pytest.fixture(scope="module")
def table():
    engine = sa.create_engine(URL)
    try:
        engine.connect().close()
    except sa.exc.OperationalError as exc:
        pytest.skip(f"no PostgreSQL at {URL}: {str(exc).splitlines()[0]}")
    name = f"privgen_people_{secrets.token_hex(4)}"
    people = sa.Table(
        name, sa.MetaData(),
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("email", sa.Text, nullable=False),
        sa.Column("age", sa.Integer),
        sa.Column("born", sa.Date),
        sa.Column("seen_at", sa.DateTime(timezone=True)),
        sa.Column("score", sa.Numeric(5, 2)),
        sa.Column("note", sa.Text),
    )
    people.create(engine)
    rows = [{"id": i, "email": f"p{i}@example.org", "age": 20 + i % 60,
             "born": pd.Timestamp("1970-01-01") + pd.Timedelta(days=i),
             "seen_at": pd.Timestamp("2025-01-01T08:00:00+00:00") + pd.Timedelta(minutes=i),
             "score": i % 100 + 0.25, "note": None if i % 10 else f"note {i}"}
            for i in range(ROWS, 0, -1)]  # inserted backwards: the read orders by primary key
    with engine.begin() as conn:
        conn.execute(people.insert(), rows)
    yield name
    people.drop(engine)
    engine.dispose()


def _count(name: str) -> int:
    engine = sa.create_engine(URL)
    with engine.connect() as conn:
        n = conn.execute(sa.select(sa.func.count()).select_from(sa.table(name))).scalar_one()
    engine.dispose()
    return n


def test_table_is_streamed_in_key_order_and_validates(table, tmp_path):
    cfg = IngestConfig(sql=SqlSource(url=URL, table=table), chunk_rows=1_000)
    result = ingest(cfg, tmp_path)
    df = pd.read_parquet(result.canonical_path)
    assert result.rows == ROWS and len(result.source_digest) == 64
    assert df["id"].tolist()[:3] == ["1", "2", "3"] and df[SOURCE_ROW].iloc[-1] == ROWS
    assert df[SOURCE_LINE].isna().all()
    assert df["born"].iloc[0] == "1970-01-02" and df["seen_at"].iloc[0].startswith("2025-01-01T08")
    contract = DataContract(columns=(
        ColumnSpec(name="id", dtype=DType.INTEGER, role=Role.ID, unique=True),
        ColumnSpec(name="email", role=Role.DIRECT_IDENTIFIER, regex=r"^\S+@\S+$"),
        ColumnSpec(name="age", dtype=DType.INTEGER, role=Role.QUASI_IDENTIFIER, min=0, max=120),
        ColumnSpec(name="born", dtype=DType.DATE, role=Role.QUASI_IDENTIFIER),
        ColumnSpec(name="seen_at", dtype=DType.DATETIME, role=Role.DATETIME),
        ColumnSpec(name="score", dtype=DType.FLOAT, role=Role.NUMERIC),
        ColumnSpec(name="note", role=Role.TEXT, nullable=True),
    ))
    outcome = validate_parquet(result.canonical_path, contract, ValidateConfig(chunk_rows=700),
                               "sql", tmp_path)
    assert outcome.report.rows_kept == ROWS and outcome.report.rows_quarantined == 0


def test_same_content_same_digest(table, tmp_path):
    cfg = IngestConfig(sql=SqlSource(url=URL, table=table, columns=("id", "email")))
    assert ingest(cfg, tmp_path / "a").source_digest == ingest(cfg, tmp_path / "b").source_digest


def test_query_with_bound_values(table, tmp_path):
    query = f"SELECT id, email FROM {table} WHERE age >= :min_age AND email <> :skip"
    cfg = IngestConfig(sql=SqlSource(url=URL, query=query,
                                     params={"min_age": 70, "skip": "p50@example.org"}))
    assert ingest(cfg, tmp_path).rows == sum(20 + i % 60 >= 70 for i in range(1, ROWS + 1)) - 1
    spliced = IngestConfig(sql=SqlSource(url=URL, query=f"SELECT * FROM {table} WHERE email = :e",
                                         params={"e": "x' OR '1'='1"}))
    with pytest.raises(InputError, match=r"ingest\.sql: has no data rows"):
        ingest(spliced, tmp_path)


@pytest.mark.parametrize("field, value", [
    ("table", "{t}; DROP TABLE {t}"),
    ("table", '{t}" CASCADE; --'),
    ("db_schema", "public; DROP TABLE {t}"),
    ("columns", ("id", "email FROM {t}; DROP TABLE {t}; --")),
])
def test_identifier_injection_is_refused_by_the_metadata(table, tmp_path, field, value):
    value = tuple(v.format(t=table) for v in value) if isinstance(value, tuple) else value.format(
        t=table)
    spec = {"url": URL, "table": table, field: value}
    with pytest.raises(InputError, match=r"ingest\.sql\.(table|db_schema|columns)"):
        ingest(IngestConfig(sql=SqlSource(**spec)), tmp_path)
    assert _count(table) == ROWS


@pytest.mark.parametrize("query, match", [
    ("WITH gone AS (DELETE FROM {t} RETURNING *) SELECT * FROM gone", "data-modifying"),
    ("SELECT nextval('{t}_id_seq') AS n", "read-only transaction"),  # a write behind a SELECT
])
def test_writes_hidden_in_a_select_are_refused_by_the_database(table, tmp_path, query, match):
    with pytest.raises(InputError, match=f"the database refused the read: .*{match}"):
        ingest(IngestConfig(sql=SqlSource(url=URL, query=query.format(t=table))), tmp_path)
    assert _count(table) == ROWS


def test_password_never_reaches_the_result_or_the_error(table, tmp_path):
    with_password = URL.replace("postgres@", "postgres:hunter2@")
    result = ingest(IngestConfig(sql=SqlSource(url=with_password, table=table,
                                               columns=("id",))), tmp_path)
    assert "hunter2" not in result.source and "***" in result.source
    refused = with_password.replace(":5432", ":1")
    with pytest.raises(InputError, match=r"ingest\.sql\.url: cannot connect") as err:
        ingest(IngestConfig(sql=SqlSource(url=refused, table=table)), tmp_path)
    assert "hunter2" not in str(err.value)
