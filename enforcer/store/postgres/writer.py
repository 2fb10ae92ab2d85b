"""The agent's writer to the PostgreSQL store: a background thread, a bounded queue, batches
by COPY, and a local spool for when the database is down or too slow.

The same front end as the SQLite StoreWriter (QueuedRecordWriter: `submit`, `submit_alert`,
`record`, `flush`, `close`), so the pipeline does not know which store it feeds. Detection
and the responder never wait: `submit` puts into a bounded queue and returns (a full queue
drops the record and counts it; the JSONL audit log still has it).

While the database cannot be reached, or a write fails or exceeds the statement timeout,
batches go to the spool (an SQLite file beside the agent's state), and every later batch goes
behind them, so that the database receives records in the order the agent made them. The
thread retries every `retry_s` and replays the spool oldest first. Stable ids (see rows.py)
make a replayed batch that had in fact been committed add nothing.
"""

from __future__ import annotations

import json
import logging
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from enforcer.store.mapping import RecordError
from enforcer.store.postgres import copy_in, migrations
from enforcer.store.postgres.dsn import redacted
from enforcer.store.postgres.rows import Rows, add, canonical
from enforcer.store.postgres.spool import Spool
from enforcer.store.queued_writer import QueuedRecordWriter

log = logging.getLogger(__name__)


class StoreUnavailable(Exception):
    """The database refused this enforcer at start (schema, credentials); says what to do."""


class PgStoreWriter(QueuedRecordWriter):
    """Write alerts and audit records of node `node` to the PostgreSQL store at `dsn`.
    It prunes days past the retention when it first reaches the database and then every
    `prune_interval_s` (None: never; `enforcer store prune` or another writer does)."""

    def __init__(self, dsn: str, node: str, spool_path: str | Path, *,
                 queue_size: int = 50_000, batch_size: int = 2_000,
                 flush_interval_s: float = 0.25, spool_max_records: int = 2_000_000,
                 retry_s: float = 2.0, connect_timeout_s: int = 5,
                 statement_timeout_s: float = 30.0,
                 prune_interval_s: float | None = 3600.0):
        super().__init__(queue_size=queue_size, batch_size=batch_size,
                         flush_interval_s=flush_interval_s)
        self.dsn = dsn
        self.path = redacted(dsn)  # what logs and the start-up line show
        self.node = node
        self.retry_s = retry_s
        self.connect_timeout_s = connect_timeout_s
        self.statement_timeout_s = statement_timeout_s
        self.prune_interval_s = prune_interval_s
        self.rejected = 0    # not an audit record, or a row the database refused
        self.written = 0     # records committed to the database
        self.failures = 0    # writes that failed and were spooled
        self.connected = False
        self.last_error: str | None = None
        self.spool = Spool(spool_path, spool_max_records)
        self._conn: Any = None
        self._partitions = copy_in.Partitions()
        self._next_try = 0.0
        # The first prune an interval after start: every agent of a cluster starting at once
        # (a rollout) must not all drop partitions together.
        self._last_prune = time.monotonic()
        self._partitions_day = datetime.now(UTC).date()
        self._first_connect()
        self._start("pg-store-writer", self._run)

    # -- the agent's side -----------------------------------------------------------------

    @property
    def backlog(self) -> int:
        """Records not yet in the database: queued in memory plus spooled on disk."""
        return self._queue.qsize() + self.spool.count

    def close(self, timeout: float = 10.0) -> None:
        """Write or spool what is queued, then stop the thread (also the AuditSink's close).

        What is still spooled stays in the spool file for the next start to replay.
        """
        self._stop(timeout)
        if not self._thread.is_alive():
            self._disconnect()
            self.spool.close()

    # -- the thread -----------------------------------------------------------------------

    def _first_connect(self) -> None:
        """Check the schema now, so a wrong database stops the agent at start; a database
        that is down only delays writing (the spool holds the records)."""
        import psycopg  # noqa: PLC0415

        try:
            self._connect()
        except migrations.SchemaError as exc:
            self.spool.close()
            raise StoreUnavailable(f"{self.path}: {exc}") from None
        except psycopg.OperationalError as exc:
            if "authentication" in str(exc) or "password" in str(exc):
                self.spool.close()
                raise StoreUnavailable(f"{self.path}: {_first_line(exc)}; check the DSN and "
                                       "its password (--store-password-file)") from None
            self._down(exc)
            log.warning("audit store %s unreachable at start, spooling to %s: %s",
                        self.path, self.spool.path, _first_line(exc))

    def _connect(self) -> None:
        import psycopg  # noqa: PLC0415

        conn = psycopg.connect(
            self.dsn, connect_timeout=self.connect_timeout_s,
            application_name=f"enforcer-agent {self.node}"[:63],
            options=f"-c statement_timeout={int(self.statement_timeout_s * 1000)}")
        try:
            migrations.check(conn)
            conn.commit()
        except BaseException:
            conn.close()
            raise
        # Today's and tomorrow's partitions now, so that the batches of a normal day never
        # make one (making one briefly locks out the console's readers).
        partitions = copy_in.Partitions()
        today = datetime.now(UTC).date()
        try:
            partitions.ensure(conn, {today, today + timedelta(days=1)})
        except BaseException:
            conn.close()
            raise
        self._conn = conn
        self._partitions = partitions
        self._partitions_day = today
        self.connected = True
        self.last_error = None

    def _disconnect(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            except Exception:  # already broken: nothing more to release
                pass
        self._conn = None
        self.connected = False

    def _down(self, exc: BaseException) -> None:
        self._disconnect()
        self.last_error = _first_line(exc)
        self._next_try = time.monotonic() + self.retry_s

    def _ready(self) -> bool:
        """Connected, or reconnected now if the retry delay is over."""
        if self._conn is not None:
            return True
        if time.monotonic() < self._next_try:
            return False
        try:
            self._connect()
        except Exception as exc:  # noqa: BLE001 - any failure: keep spooling, try later
            self._down(exc)
            return False
        log.info("audit store %s reachable again; replaying %d spooled records",
                 self.path, self.spool.count)
        return True

    def _run(self) -> None:
        stopping = False
        while not stopping:
            items, stopping = self._take()
            try:
                if items:
                    self._store(items)
                if self.spool.count and self._ready():
                    self._replay(time.monotonic() + 1.0)
            except Exception:  # never let the thread die: the JSONL log has every record
                self.failures += 1
                log.exception("audit store: unexpected failure; %d records not stored",
                              len(items))
            self._done_with(len(items))
            self._prune_now_and_then()
        if self.spool.count and self._ready():
            self._replay(time.monotonic() + 5.0)

    def _store(self, records: list[dict[str, Any]]) -> None:
        if not self.spool.count and self._ready():
            try:
                self._write(records)
                return
            except _Down:
                pass
        self.spool.append([canonical(r) for r in records])

    def _replay(self, deadline: float) -> None:
        """Send the spool to the database, oldest first, until empty, down or `deadline`."""
        while self.spool.count and time.monotonic() < deadline:
            chunk = self.spool.oldest(self.batch_size)
            if not chunk:
                self.spool.count = 0
                return
            try:
                self._write([json.loads(text) for _, text in chunk])
            except _Down:
                return
            self.spool.remove_through(chunk[-1][0])

    def _write(self, records: list[dict[str, Any]]) -> None:
        """Commit `records`; raises _Down (connection closed) when the database failed."""
        import psycopg  # noqa: PLC0415

        rows = Rows()
        kept: list[dict[str, Any]] = []
        for record in records:
            try:
                add(rows, self.node, record)
                kept.append(record)
            except RecordError as exc:
                self.rejected += 1
                log.warning("audit store: record not stored: %s", exc)
        try:
            copy_in.write(self._conn, rows, self._partitions)
        except (psycopg.errors.DataError, psycopg.errors.IntegrityError, TypeError,
                ValueError) as exc:
            # A row the database refuses must not hold up every later one: find it.
            log.warning("audit store: batch refused (%s); writing one by one",
                        _first_line(exc))
            self._partitions = copy_in.Partitions()
            self._one_by_one(kept)
        except psycopg.Error as exc:
            self.failures += 1
            self._down(exc)
            log.warning("audit store %s: write failed, spooling: %s", self.path,
                        self.last_error)
            raise _Down from None
        self.written += len(kept)

    def _one_by_one(self, records: list[dict[str, Any]]) -> None:
        import psycopg  # noqa: PLC0415

        for record in records:
            rows = Rows()
            add(rows, self.node, record)
            try:
                copy_in.write(self._conn, rows, self._partitions)
            except (psycopg.errors.DataError, psycopg.errors.IntegrityError, TypeError,
                    ValueError) as exc:
                self.rejected += 1
                log.warning("audit store: record refused by the database: %s",
                            _first_line(exc))
            except psycopg.Error as exc:
                self.failures += 1
                self._down(exc)
                raise _Down from None

    def _prune_now_and_then(self) -> None:
        if self._conn is not None and datetime.now(UTC).date() != self._partitions_day:
            self._partitions_day = datetime.now(UTC).date()
            import psycopg  # noqa: PLC0415

            try:  # tomorrow's partitions, a day ahead
                self._partitions.ensure(self._conn, {self._partitions_day + timedelta(days=1)})
            except psycopg.Error as exc:
                self._down(exc)
                return
        now = time.monotonic()
        if (self._conn is None or self.prune_interval_s is None
                or now - self._last_prune < self.prune_interval_s):
            return
        self._last_prune = now
        import psycopg  # noqa: PLC0415

        try:
            with self._conn.transaction():
                self._conn.execute("SELECT enforcer_prune()")
        except psycopg.errors.InsufficientPrivilege:
            log.info("audit store: this role may not prune; `enforcer store prune` does")
        except psycopg.Error as exc:
            self._down(exc)


class _Down(Exception):
    """The database failed a write; the connection is closed and a retry is scheduled."""


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
