"""SQL sources: a table read whole in primary-key order, or one read-only parameterized SELECT,
streamed from the database in chunks of string columns (see tasks/sources.py for the files)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import sqlalchemy as sa

from tasks.errors import InputError
from tasks.sources import Opened, _first_line, _Rows, clean_names, suggest
from tasks.sources_config import IngestConfig, SqlSource

_SQL_NOISE = re.compile(r"--[^\n]*|/\*.*?\*/|'(?:''|[^'])*'|\"(?:\"\"|[^\"])*\"", re.DOTALL)


def check_query(query: str) -> None:
    """Refuse anything but one SELECT; the database's read-only transaction is the real guard."""
    body = _SQL_NOISE.sub(" ", query).strip().rstrip(";").strip()
    if ";" in body:
        raise InputError("ingest.sql.query holds more than one statement; give a single SELECT")
    first = body.split(None, 1)[0].upper() if body else ""
    if first not in ("SELECT", "WITH"):
        raise InputError(f"ingest.sql.query starts with {first or 'nothing'!r}; it must be one "
                         "read-only SELECT (or WITH ... SELECT); use ingest.sql.table to read a "
                         "whole table")


def _read_only(conn: sa.Connection, shown: str) -> None:
    dialect = conn.dialect.name
    if dialect == "postgresql":
        conn.exec_driver_sql("SET TRANSACTION READ ONLY")
    elif dialect == "sqlite":
        conn.exec_driver_sql("PRAGMA query_only = ON")
    else:
        raise InputError(f"ingest.sql.url {shown}: privgen enforces read-only reads on "
                         f"PostgreSQL and SQLite only, not {dialect}; export the table to a file")


def _table_select(conn: sa.Connection, spec: SqlSource, shown: str) -> sa.Select:
    """SELECT over a table the database says exists, with columns it says the table has.

    Names are matched against the reflected metadata and quoted by SQLAlchemy, never
    formatted into SQL text, so a name cannot smuggle SQL in.
    """
    inspector = sa.inspect(conn)
    if spec.db_schema is not None and spec.db_schema not in inspector.get_schema_names():
        raise InputError(f"ingest.sql.db_schema {spec.db_schema!r} does not exist in {shown}"
                         f"{suggest(spec.db_schema, inspector.get_schema_names())}")
    tables = (inspector.get_table_names(schema=spec.db_schema)
              + inspector.get_view_names(schema=spec.db_schema))
    if spec.table not in tables:
        raise InputError(f"ingest.sql.table {spec.table!r} is not a table or view in {shown}"
                         f"{suggest(spec.table or '', tables)}; give the name exactly as the "
                         "database lists it")
    table = sa.Table(spec.table, sa.MetaData(), schema=spec.db_schema, autoload_with=conn)
    unknown = [c for c in spec.columns or () if c not in table.c]
    if unknown:
        raise InputError(f"ingest.sql.columns: {', '.join(map(repr, unknown))} not in table "
                         f"{spec.table!r}; it has {', '.join(table.c.keys())}")
    stmt = sa.select(*(table.c[c] for c in spec.columns)) if spec.columns else sa.select(table)
    # Row numbers mean something only in a stable order: the primary key's, where there is one.
    return stmt.order_by(*table.primary_key.columns)


def _sql_value(v: Any) -> str | None:
    if v is None or isinstance(v, str):
        return v
    if isinstance(v, bool):
        return "true" if v else "false"
    if hasattr(v, "isoformat"):
        return v.isoformat()
    if isinstance(v, (bytes, memoryview)):
        return bytes(v).decode("utf-8", "backslashreplace")
    return str(v)


def read_sql(spec: SqlSource, cfg: IngestConfig) -> Opened:
    """A table or a read-only parameterized query, streamed from the database in chunks."""
    url = spec.url.get_secret_value()
    try:
        engine = sa.create_engine(url)
        shown = engine.url.render_as_string(hide_password=True)
        conn = engine.connect()
    except (sa.exc.ArgumentError, sa.exc.DBAPIError, ImportError) as exc:
        raise InputError(f"ingest.sql.url: cannot connect ({_first_line(exc)}); check the URL, "
                         "the server and the credentials") from exc
    try:
        _read_only(conn, shown)
        if spec.table:
            stmt, params = _table_select(conn, spec, shown), {}
        else:
            check_query(spec.query or "")
            stmt, params = sa.text(spec.query or ""), dict(spec.params)
        result = conn.execution_options(stream_results=True, yield_per=cfg.chunk_rows).execute(
            stmt, params)
        names = clean_names(Path(shown), list(result.keys()))
    except sa.exc.SQLAlchemyError as exc:
        conn.close()
        engine.dispose()
        raise InputError(f"ingest.sql ({shown}): the database refused the read: "
                         f"{_first_line(getattr(exc, 'orig', None) or exc)}") from exc
    except BaseException:
        conn.close()
        engine.dispose()
        raise

    def chunks() -> Iterator[pa.Table]:
        try:
            for part in result.partitions():
                rows = _Rows(names)
                for r in part:
                    rows.add(None, [_sql_value(v) for v in r])
                yield rows.table()
        except sa.exc.SQLAlchemyError as exc:
            raise InputError(f"ingest.sql ({shown}): reading failed: "
                             f"{_first_line(getattr(exc, 'orig', None) or exc)}") from exc
        finally:
            conn.close()
            engine.dispose()

    return Opened(names, chunks(), {"format": "sql", "source": shown})
