"""The embedded store: one SQLite file that several worker processes on one machine share.

WAL mode lets readers run beside the one writer; the busy timeout makes a second writer wait for
the first instead of failing; `BEGIN IMMEDIATE` takes the write lock before `put_flag` reads the
version, so two processes can never both pass the same version check. The audit table refuses
UPDATE and DELETE by trigger, so the log stays append-only even against hand-written SQL.

Every method calls the blocking `sqlite3` API inline on the event loop. That is deliberate: these
are admin-path operations (flag writes, audit reads, a cheap counter poll), never the request
path, and each transaction is a few statements long. The worst case is a write waiting up to
`busy_timeout_s` for another process's transaction; move to a thread if that ever matters.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

import msgspec
import structlog

from gateway.state.errors import StoreUnavailable, VersionConflict
from gateway.state.store import (
    AuditEntry,
    ComparisonRecord,
    DiffFn,
    FlagRecord,
    OutputRecord,
    TensorData,
    whole_value_diff,
)

_log = structlog.get_logger("gateway.state")

SCHEMA_VERSION = 2  # 2: shadow_comparisons
MAX_AUDIT_LIMIT = 10_000

_SCHEMA = """
CREATE TABLE IF NOT EXISTS flags (
    key TEXT PRIMARY KEY,
    flag TEXT NOT NULL,
    version INTEGER NOT NULL,
    updated_at REAL NOT NULL,
    updated_by TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS audit (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at REAL NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    key TEXT NOT NULL,
    model TEXT NOT NULL,
    reason TEXT NOT NULL,
    version_before INTEGER,
    version_after INTEGER,
    diff TEXT NOT NULL,
    evidence TEXT
);
CREATE INDEX IF NOT EXISTS audit_by_model ON audit (model, id);
CREATE TRIGGER IF NOT EXISTS audit_no_update BEFORE UPDATE ON audit
BEGIN
    SELECT RAISE(ABORT, 'the audit log is append-only');
END;
CREATE TRIGGER IF NOT EXISTS audit_no_delete BEFORE DELETE ON audit
BEGIN
    SELECT RAISE(ABORT, 'the audit log is append-only');
END;
CREATE TABLE IF NOT EXISTS meta (
    name TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
INSERT OR IGNORE INTO meta (name, value) VALUES ('flag_changes', 0);
CREATE TABLE IF NOT EXISTS shadow_comparisons (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at REAL NOT NULL,
    model TEXT NOT NULL,
    request_id TEXT NOT NULL,
    primary_version TEXT NOT NULL,
    shadow_version TEXT NOT NULL,
    outcome TEXT NOT NULL,
    variant TEXT NOT NULL,
    cohort TEXT NOT NULL,
    context TEXT NOT NULL,
    rows INTEGER NOT NULL,
    agreed_rows INTEGER,
    agree INTEGER,
    max_abs_diff REAL,
    primary_latency_ms REAL,
    shadow_latency_ms REAL,
    primary_error TEXT NOT NULL,
    shadow_error TEXT NOT NULL,
    inputs_dropped INTEGER NOT NULL,
    payload TEXT
);
CREATE INDEX IF NOT EXISTS shadow_by_model_at ON shadow_comparisons (model, at);
CREATE INDEX IF NOT EXISTS shadow_by_at ON shadow_comparisons (at);
"""

# Literal statements only; every value travels as a parameter.
_SELECT_FLAG = "SELECT key, flag, version, updated_at, updated_by FROM flags WHERE key = ?"
_SELECT_FLAGS = "SELECT key, flag, version, updated_at, updated_by FROM flags ORDER BY key"
_UPSERT_FLAG = (
    "INSERT INTO flags (key, flag, version, updated_at, updated_by) VALUES (?, ?, ?, ?, ?) "
    "ON CONFLICT (key) DO UPDATE SET flag = excluded.flag, version = excluded.version, "
    "updated_at = excluded.updated_at, updated_by = excluded.updated_by"
)
_INSERT_AUDIT = (
    "INSERT INTO audit (at, actor, action, key, model, reason, version_before, version_after, "
    "diff, evidence) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_SELECT_AUDIT = (
    "SELECT id, at, actor, action, key, model, reason, version_before, version_after, diff, "
    "evidence FROM audit ORDER BY id DESC LIMIT ?"
)
_SELECT_AUDIT_BY_MODEL = (
    "SELECT id, at, actor, action, key, model, reason, version_before, version_after, diff, "
    "evidence FROM audit WHERE model = ? ORDER BY id DESC LIMIT ?"
)

_COMPARISON_COLUMNS = (
    "at, model, request_id, primary_version, shadow_version, outcome, variant, cohort, context, "
    "rows, agreed_rows, agree, max_abs_diff, primary_latency_ms, shadow_latency_ms, "
    "primary_error, shadow_error, inputs_dropped"
)
_INSERT_COMPARISON = (
    f"INSERT INTO shadow_comparisons ({_COMPARISON_COLUMNS}, payload) "  # noqa: S608 - literals
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_PRUNE_BY_AGE = "DELETE FROM shadow_comparisons WHERE at < ?"
_PRUNE_BY_COUNT = (
    "DELETE FROM shadow_comparisons WHERE id <= "
    "(SELECT id FROM shadow_comparisons ORDER BY id DESC LIMIT 1 OFFSET ?)"
)


class _Payload(msgspec.Struct, frozen=True, omit_defaults=True):
    """The bulky part of a comparison record, kept as one JSON column."""

    primary_output: OutputRecord | None = None
    shadow_output: OutputRecord | None = None
    inputs: dict[str, TensorData] | None = None


_decode_payload = msgspec.json.Decoder(_Payload).decode
_decode_context = msgspec.json.Decoder(dict[str, str | int | float | bool]).decode

# Sorted keys make the encoding canonical, so "same flag" is a byte comparison.
_encode = msgspec.json.Encoder(order="sorted").encode
_decode_object = msgspec.json.Decoder(dict[str, Any]).decode
_decode_diff = msgspec.json.Decoder(list[dict[str, Any]]).decode
_decode_evidence = msgspec.json.Decoder(dict[str, Any] | None).decode


def _text(value: Any) -> str:
    return _encode(value).decode("utf-8")


class SQLiteStore:
    """`Store` over one SQLite file, created with its schema on first open."""

    def __init__(
        self,
        path: Path,
        diff: DiffFn = whole_value_diff,
        *,
        busy_timeout_s: float = 5.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.path = path
        self._diff = diff
        self._clock = clock
        self._lock = threading.Lock()
        self._closed = False
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            # isolation_level=None: no implicit transactions; each one below is explicit.
            # check_same_thread=False: the lock serialises use, whichever thread calls.
            self._db = sqlite3.connect(
                path, timeout=busy_timeout_s, isolation_level=None, check_same_thread=False
            )
        except (OSError, sqlite3.Error) as exc:
            raise StoreUnavailable(f"cannot open the state file {path}: {exc}") from exc
        try:
            self._open()
        except BaseException:
            self._db.close()
            self._closed = True
            raise

    def _open(self) -> None:
        with self._guard():
            mode = self._db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                _log.warning("sqlite_wal_unavailable", path=str(self.path), journal_mode=mode)
        with self._transaction("IMMEDIATE") as db:
            found = db.execute("PRAGMA user_version").fetchone()[0]
            if found > SCHEMA_VERSION:
                raise StoreUnavailable(
                    f"the state file {self.path} has schema version {found}, newer than this "
                    f"gateway's {SCHEMA_VERSION}"
                )
            for statement in _statements(_SCHEMA):
                db.execute(statement)
            db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    @contextmanager
    def _guard(self) -> Iterator[sqlite3.Connection]:
        """Hold the connection alone; turn SQLite's operational failures into `StoreUnavailable`."""
        with self._lock:
            if self._closed:
                raise StoreUnavailable(f"the store on {self.path} is closed")
            try:
                yield self._db
            except sqlite3.Error as exc:
                if isinstance(
                    exc, sqlite3.IntegrityError | sqlite3.ProgrammingError | sqlite3.InterfaceError
                ):
                    raise
                raise StoreUnavailable(f"state file {self.path}: {exc}") from exc

    @contextmanager
    def _transaction(
        self, kind: Literal["DEFERRED", "IMMEDIATE"] = "DEFERRED"
    ) -> Iterator[sqlite3.Connection]:
        """One short transaction: committed when the block ends, rolled back when it raises."""
        with self._guard() as db:
            db.execute(f"BEGIN {kind}")
            try:
                yield db
                db.execute("COMMIT")
            except BaseException:
                if db.in_transaction:  # SQLite may have rolled back already (disk full, I/O)
                    db.execute("ROLLBACK")
                raise

    async def get_flag(self, key: str) -> FlagRecord | None:
        with self._guard() as db:
            row = db.execute(_SELECT_FLAG, (key,)).fetchone()
        return None if row is None else _flag_record(row)

    async def list_flags(self) -> list[FlagRecord]:
        with self._guard() as db:
            rows = db.execute(_SELECT_FLAGS).fetchall()
        return [_flag_record(row) for row in rows]

    async def put_flag(
        self,
        key: str,
        flag: dict[str, Any],
        *,
        expected_version: int | None,
        actor: str,
        action: str,
        reason: str,
        model: str,
        evidence: dict[str, Any] | None = None,
    ) -> FlagRecord:
        flag_text = _text(flag)
        after = _decode_object(flag_text)  # the stored form, as every later read returns it
        evidence_text = None if evidence is None else _text(evidence)
        with self._transaction("IMMEDIATE") as db:
            row = db.execute(_SELECT_FLAG, (key,)).fetchone()
            current = None if row is None else _flag_record(row)
            actual = 0 if current is None else current.version
            if expected_version is not None and expected_version != actual:
                raise VersionConflict(key, expected_version, actual)
            if current is not None and _text(current.flag) == flag_text:
                return current
            before = None if current is None else current.flag
            diff_text = _text(self._diff(before, after))
            record = FlagRecord(
                key=key, flag=after, version=actual + 1, updated_at=self._clock(), updated_by=actor
            )
            db.execute(_UPSERT_FLAG, (key, flag_text, record.version, record.updated_at, actor))
            db.execute(
                _INSERT_AUDIT,
                (
                    record.updated_at,
                    actor,
                    action,
                    key,
                    model,
                    reason,
                    None if current is None else actual,
                    record.version,
                    diff_text,
                    evidence_text,
                ),
            )
            db.execute("UPDATE meta SET value = value + 1 WHERE name = 'flag_changes'")
        return record

    async def audit(self, *, model: str | None = None, limit: int = 50) -> list[AuditEntry]:
        if not 1 <= limit <= MAX_AUDIT_LIMIT:
            raise ValueError(f"limit must be between 1 and {MAX_AUDIT_LIMIT}, not {limit}")
        with self._guard() as db:
            if model is None:
                rows = db.execute(_SELECT_AUDIT, (limit,)).fetchall()
            else:
                rows = db.execute(_SELECT_AUDIT_BY_MODEL, (model, limit)).fetchall()
        return [_audit_entry(row) for row in rows]

    async def append_audit(
        self,
        *,
        actor: str,
        action: str,
        key: str,
        model: str,
        reason: str,
        diff: list[dict[str, Any]] | None = None,
        evidence: dict[str, Any] | None = None,
    ) -> AuditEntry:
        diff_text = _text([] if diff is None else diff)
        evidence_text = None if evidence is None else _text(evidence)
        at = self._clock()
        with self._transaction("IMMEDIATE") as db:
            cursor = db.execute(
                _INSERT_AUDIT,
                (at, actor, action, key, model, reason, None, None, diff_text, evidence_text),
            )
            entry_id = cursor.lastrowid
        assert entry_id is not None  # an INSERT into a rowid table always sets it
        return _audit_entry(
            (entry_id, at, actor, action, key, model, reason, None, None, diff_text, evidence_text)
        )

    async def change_counter(self) -> int:
        with self._guard() as db:
            row = db.execute("SELECT value FROM meta WHERE name = 'flag_changes'").fetchone()
        return int(row[0])

    async def add_comparisons(self, records: Sequence[ComparisonRecord]) -> None:
        if not records:
            return
        await asyncio.to_thread(self._insert_comparisons, records)

    def _insert_comparisons(self, records: Sequence[ComparisonRecord]) -> None:
        rows = [_comparison_row(record) for record in records]  # encoded off the event loop
        with self._transaction("IMMEDIATE") as db:
            db.executemany(_INSERT_COMPARISON, rows)

    async def comparisons(
        self,
        model: str,
        *,
        since: float | None = None,
        until: float | None = None,
        primary: str | None = None,
        shadow: str | None = None,
        disagreements_only: bool = False,
        payload: bool = True,
        limit: int | None = None,
    ) -> list[ComparisonRecord]:
        if limit is not None and limit < 1:
            raise ValueError(f"limit must be positive, not {limit}")
        where = ["model = ?"]
        values: list[Any] = [model]
        for clause, value in (
            ("at >= ?", since),
            ("at < ?", until),
            ("primary_version = ?", primary),
            ("shadow_version = ?", shadow),
        ):
            if value is not None:
                where.append(clause)
                values.append(value)
        if disagreements_only:
            where.append("agree = 0")
        columns = _COMPARISON_COLUMNS + (", payload" if payload else "")
        # The clauses are literals chosen above; every value travels as a parameter.
        query = (
            f"SELECT {columns} FROM shadow_comparisons WHERE {' AND '.join(where)} "  # noqa: S608
            "ORDER BY at DESC, id DESC"
        )
        if limit is not None:
            query += " LIMIT ?"
            values.append(limit)
        rows = await asyncio.to_thread(self._select, query, tuple(values))
        return [_comparison_record(row) for row in rows]

    def _select(self, query: str, values: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        with self._guard() as db:
            return db.execute(query, values).fetchall()

    async def prune_comparisons(
        self, *, older_than: float | None = None, keep_newest: int | None = None
    ) -> int:
        if keep_newest is not None and keep_newest < 0:
            raise ValueError(f"keep_newest must not be negative, not {keep_newest}")
        return await asyncio.to_thread(self._prune, older_than, keep_newest)

    def _prune(self, older_than: float | None, keep_newest: int | None) -> int:
        deleted = 0
        with self._transaction("IMMEDIATE") as db:
            if older_than is not None:
                deleted += db.execute(_PRUNE_BY_AGE, (older_than,)).rowcount
            if keep_newest is not None:
                if keep_newest == 0:
                    deleted += db.execute("DELETE FROM shadow_comparisons").rowcount
                else:
                    deleted += db.execute(_PRUNE_BY_COUNT, (keep_newest,)).rowcount
        return deleted

    async def close(self) -> None:
        with self._lock:
            if not self._closed:
                self._closed = True
                self._db.close()


def _statements(script: str) -> Iterator[str]:
    """Split a schema script into complete statements (trigger bodies hold inner semicolons)."""
    pending = ""
    for line in script.splitlines(keepends=True):
        pending += line
        if sqlite3.complete_statement(pending):
            yield pending.strip()
            pending = ""
    if pending.strip():
        raise ValueError(f"incomplete SQL statement: {pending.strip()!r}")


def _flag_record(row: tuple[Any, ...]) -> FlagRecord:
    key, flag, version, updated_at, updated_by = row
    return FlagRecord(
        key=key,
        flag=_decode_object(flag),
        version=version,
        updated_at=updated_at,
        updated_by=updated_by,
    )


def _audit_entry(row: tuple[Any, ...]) -> AuditEntry:
    entry_id, at, actor, action, key, model, reason, before, after, diff, evidence = row
    return AuditEntry(
        id=entry_id,
        at=at,
        actor=actor,
        action=action,
        key=key,
        model=model,
        reason=reason,
        version_before=before,
        version_after=after,
        diff=_decode_diff(diff),
        evidence=None if evidence is None else _decode_evidence(evidence),
    )


def _comparison_row(record: ComparisonRecord) -> tuple[Any, ...]:
    payload = _Payload(record.primary_output, record.shadow_output, record.inputs)
    return (
        record.at,
        record.model,
        record.request_id,
        record.primary_version,
        record.shadow_version,
        record.outcome,
        record.variant,
        record.cohort,
        _text(record.context),
        record.rows,
        record.agreed_rows,
        None if record.agree is None else int(record.agree),
        record.max_abs_diff,
        record.primary_latency_ms,
        record.shadow_latency_ms,
        record.primary_error,
        record.shadow_error,
        int(record.inputs_dropped),
        _text(payload),
    )


def _comparison_record(row: tuple[Any, ...]) -> ComparisonRecord:
    (
        at,
        model,
        request_id,
        primary_version,
        shadow_version,
        outcome,
        variant,
        cohort,
        context,
        rows,
        agreed_rows,
        agree,
        max_abs_diff,
        primary_latency_ms,
        shadow_latency_ms,
        primary_error,
        shadow_error,
        inputs_dropped,
        *rest,
    ) = row
    payload = _decode_payload(rest[0]) if rest and rest[0] is not None else _Payload()
    return ComparisonRecord(
        request_id=request_id,
        at=at,
        model=model,
        primary_version=primary_version,
        shadow_version=shadow_version,
        outcome=outcome,
        variant=variant,
        cohort=cohort,
        context=_decode_context(context),
        rows=rows,
        agreed_rows=agreed_rows,
        agree=None if agree is None else bool(agree),
        max_abs_diff=max_abs_diff,
        primary_latency_ms=primary_latency_ms,
        shadow_latency_ms=shadow_latency_ms,
        primary_error=primary_error,
        shadow_error=shadow_error,
        primary_output=payload.primary_output,
        shadow_output=payload.shadow_output,
        inputs=payload.inputs,
        inputs_dropped=bool(inputs_dropped),
    )
