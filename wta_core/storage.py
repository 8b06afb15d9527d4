"""The DuckDB file that contains every table, written safely from parallel processes.

DuckDB lets one process at a time open a database file for writing, and a process that has
it open read-only also blocks writers. So every connection here is short: a cross-process file lock
orders this project's own processes, and a connection that still meets a lock held by someone
else (a user's own `duckdb` session) is retried with backoff until `WTA_DB_TIMEOUT_S` seconds
(default 600) pass. Each partition's rows are replaced in one transaction, so a rerun never
duplicates rows and a reader never sees half a partition.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from pathlib import Path
from typing import Iterator

import duckdb
import polars as pl
from filelock import FileLock

from wta_core.errors import WtaError

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT_S = 600.0
_LOCK_MARKERS = ("Could not set lock", "Conflicting lock", "database is locked", "lock on file")


def _timeout_s() -> float:
    raw = os.environ.get("WTA_DB_TIMEOUT_S", "")
    try:
        return float(raw) if raw else DEFAULT_TIMEOUT_S
    except ValueError as error:
        raise WtaError(f"WTA_DB_TIMEOUT_S must be a number of seconds, got {raw!r}") from error


class TableStore:
    """Short-lived, lock-ordered connections to one DuckDB file."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._lock = FileLock(str(self.path) + ".lock")

    @contextlib.contextmanager
    def connect(self, read_only: bool = False) -> Iterator[duckdb.DuckDBPyConnection]:
        """Open a connection under the file lock, retrying while another process holds the file."""
        if read_only and not self.path.exists():
            raise WtaError(f"no database at {self.path}; materialise the gtzan_dataset asset first")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        deadline = time.monotonic() + _timeout_s()
        delay = 0.05
        warned_at = 0.0
        with self._lock:
            while True:
                try:
                    connection = duckdb.connect(str(self.path), read_only=read_only)
                    break
                except duckdb.IOException as error:
                    if not any(marker in str(error) for marker in _LOCK_MARKERS):
                        raise
                    now = time.monotonic()
                    if now > deadline:
                        raise WtaError(
                            f"{self.path} stayed locked by another process for {_timeout_s():.0f} s "
                            f"({error}); close other duckdb sessions on this file and rerun"
                        ) from error
                    if now - warned_at > 10:
                        log.warning("waiting for %s: it is locked by another process (%s)", self.path, error)
                        warned_at = now
                    time.sleep(delay)
                    delay = min(delay * 2, 1.0)
            try:
                yield connection
            finally:
                connection.close()

    @contextlib.contextmanager
    def transaction(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """Open a connection inside one transaction, committed on success and rolled back on error.

        Read-modify-write work belongs in one transaction, so a parallel writer cannot slip
        in between the read and the write.
        """
        with self.connect() as connection:
            connection.execute("BEGIN TRANSACTION")
            try:
                yield connection
            except BaseException:
                connection.execute("ROLLBACK")
                raise
            connection.execute("COMMIT")

    def replace_rows(self, table: str, frame: pl.DataFrame, where: dict[str, object] | None = None) -> int:
        """Delete the rows matching `where` (all rows when None) and insert `frame`, in one transaction.

        Creates the table from `frame`'s schema when it does not exist. Column names come from
        code, never from data; every value is a bound parameter. Returns the rows inserted.
        """
        with self.transaction() as connection:
            replace_in(connection, table, frame, where)
        return frame.height

    def read(self, query: str, parameters: list | None = None) -> pl.DataFrame:
        """Run a read query with bound parameters and return a polars frame."""
        with self.connect(read_only=True) as connection:
            return pl.from_arrow(connection.sql(query, params=parameters or None).to_arrow_table())

    def table_exists(self, table: str) -> bool:
        if not self.path.exists():
            return False
        with self.connect(read_only=True) as connection:
            found = connection.execute(
                "SELECT count(*) FROM information_schema.tables WHERE table_name = ?", [table]
            ).fetchone()
        return bool(found and found[0])

    def read_table(self, table: str, where: dict[str, object] | None = None) -> pl.DataFrame:
        """Read the rows of `table` matching `where`, or an empty frame when the table does not exist."""
        _check_identifier(table)
        if not self.table_exists(table):
            return pl.DataFrame()
        where = where or {}
        for column in where:
            _check_identifier(column)
        clause = (" WHERE " + " AND ".join(f'"{c}" IS NOT DISTINCT FROM ?' for c in where)) if where else ""
        return self.read(f'SELECT * FROM "{table}"{clause}', list(where.values()))


def replace_in(connection: duckdb.DuckDBPyConnection, table: str, frame: pl.DataFrame,
               where: dict[str, object] | None = None) -> None:
    """Inside an open transaction: delete the rows matching `where` (all when None), insert `frame`."""
    _check_identifier(table)
    where = where or {}
    for column in where:
        _check_identifier(column)
    connection.register("incoming", frame.to_arrow())
    try:
        connection.execute(f'CREATE TABLE IF NOT EXISTS "{table}" AS SELECT * FROM incoming LIMIT 0')
        if where:
            clause = " AND ".join(f'"{column}" IS NOT DISTINCT FROM ?' for column in where)
            connection.execute(f'DELETE FROM "{table}" WHERE {clause}', list(where.values()))
        else:
            connection.execute(f'DELETE FROM "{table}"')
        if frame.height:
            connection.execute(f'INSERT INTO "{table}" BY NAME SELECT * FROM incoming')
    finally:
        # After a failed statement the transaction is aborted, so unregister fails as well. That
        # second error would hide the first, and the caller's rollback drops the view anyway.
        with contextlib.suppress(duckdb.TransactionException):
            connection.unregister("incoming")


def read_in(connection: duckdb.DuckDBPyConnection, query: str, parameters: list | None = None) -> pl.DataFrame:
    """Run a query on an open connection and return a polars frame."""
    return pl.from_arrow(connection.sql(query, params=parameters or None).to_arrow_table())


def _check_identifier(name: str) -> None:
    if not name.replace("_", "").isalnum():
        raise WtaError(f"invalid table or column name {name!r}; use letters, digits and underscores")
