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
import math
import sqlite3
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal, TypeVar

import msgspec
import structlog

from gateway.state import comparison_batches as batches
from gateway.state import sqlite_shared as shared
from gateway.state.errors import StoreUnavailable, VersionConflict
from gateway.state.shared import Claim, ShadowLabels, StoredPrediction, WindowTally
from gateway.state.store import (
    AuditEntry,
    ComparisonRecord,
    DiffFn,
    FlagRecord,
    whole_value_diff,
)

_log = structlog.get_logger("gateway.state")
T = TypeVar("T")

# 2: shadow_comparisons, 3: in batches, 4: batches of plain records, 5: predictions, windows
SCHEMA_VERSION = 5
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
CREATE TABLE IF NOT EXISTS epoch (id TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS predictions (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    model TEXT NOT NULL,
    request_id TEXT NOT NULL,
    at REAL NOT NULL,
    expires_at REAL NOT NULL,
    claimed INTEGER NOT NULL DEFAULT 0,
    data BLOB NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS predictions_by_id ON predictions (model, request_id);
CREATE INDEX IF NOT EXISTS predictions_by_expiry ON predictions (expires_at);
CREATE TABLE IF NOT EXISTS prediction_shadows (
    model TEXT NOT NULL,
    request_id TEXT NOT NULL,
    version TEXT NOT NULL,
    labels BLOB NOT NULL,
    PRIMARY KEY (model, request_id, version)
);
CREATE TABLE IF NOT EXISTS guard_windows (
    model TEXT NOT NULL,
    flag_version INTEGER NOT NULL,
    process TEXT NOT NULL,
    updated_at REAL NOT NULL,
    data BLOB NOT NULL,
    PRIMARY KEY (model, flag_version, process)
);
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
            if found in (2, 3):
                discarded = batches.discard_older(db)
                _log.warning(
                    "shadow_records_discarded", path=str(self.path), schema=found, records=discarded
                )
            for statement in _statements(_SCHEMA + batches.SCHEMA):
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
        at: float | None = None,
    ) -> AuditEntry:
        diff_text = _text([] if diff is None else diff)
        evidence_text = None if evidence is None else _text(evidence)
        at = self._clock() if at is None else at
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
        rows = batches.batch_rows(records)  # encoded off the event loop
        with self._transaction("IMMEDIATE") as db:
            db.executemany(batches.INSERT, rows)

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
        query = batches.Query(since, until, primary, shadow, disagreements_only)
        return await asyncio.to_thread(self._select_comparisons, model, query, payload, limit)

    def _select_comparisons(
        self, model: str, query: batches.Query, payload: bool, limit: int | None
    ) -> list[ComparisonRecord]:
        with self._guard() as db:
            rows = db.execute(
                "SELECT id, data FROM shadow_batches "
                "WHERE model = ? AND last_at >= ? AND first_at < ?",
                (
                    model,
                    -math.inf if query.since is None else query.since,
                    math.inf if query.until is None else query.until,
                ),
            ).fetchall()
        return batches.select(rows, query, payload=payload, limit=limit)

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
                deleted += _prune_older(db, older_than)
            if keep_newest is not None:
                deleted += _prune_beyond(db, keep_newest)
        return deleted

    # -- what worker processes pool (gateway.state.shared) ----------------------------------

    async def epoch(self) -> str:
        return await asyncio.to_thread(self._in_transaction, shared.epoch)

    def change_feed(self) -> AsyncIterator[None] | None:
        return None  # processes sharing a file poll its change counter

    async def add_predictions(
        self,
        model: str,
        predictions: Sequence[StoredPrediction],
        *,
        keep_s: float,
        max_entries: int,
    ) -> None:
        if predictions:
            await asyncio.to_thread(
                self._in_transaction,
                lambda db: shared.add_predictions(
                    db,
                    model,
                    predictions,
                    keep_s=keep_s,
                    max_entries=max_entries,
                    now=self._clock(),
                ),
            )

    async def add_shadow_labels(self, model: str, labels: Sequence[ShadowLabels]) -> None:
        if labels:
            await asyncio.to_thread(
                self._in_transaction, lambda db: shared.add_shadow_labels(db, model, labels)
            )

    async def claim_predictions(self, model: str, request_ids: Sequence[str]) -> dict[str, Claim]:
        return await asyncio.to_thread(
            self._in_transaction,
            lambda db: shared.claim_predictions(db, model, request_ids, self._clock()),
        )

    async def put_window_tally(
        self, model: str, flag_version: int, process: str, tally: WindowTally
    ) -> None:
        await asyncio.to_thread(
            self._in_transaction,
            lambda db: shared.put_window_tally(
                db, model, flag_version, process, tally, self._clock()
            ),
        )

    async def window_tallies(self, model: str, flag_version: int) -> list[WindowTally]:
        return await asyncio.to_thread(
            self._in_transaction, lambda db: shared.window_tallies(db, model, flag_version)
        )

    def _in_transaction(self, work: Callable[[sqlite3.Connection], T]) -> T:
        with self._transaction("IMMEDIATE") as db:
            return work(db)

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


def _prune_older(db: sqlite3.Connection, cut: float) -> int:
    """Delete the records with `at < cut`: whole batches, and the old part of any batch that
    straddles the cut."""
    (deleted,) = db.execute(
        "SELECT COALESCE(SUM(records), 0) FROM shadow_batches WHERE last_at < ?", (cut,)
    ).fetchone()
    db.execute("DELETE FROM shadow_batches WHERE last_at < ?", (cut,))
    straddling = db.execute(
        "SELECT id, data FROM shadow_batches WHERE first_at < ?", (cut,)
    ).fetchall()
    for batch_id, data in straddling:
        records = batches.decode(data)
        kept = [record for record in records if record.at >= cut]
        deleted += len(records) - len(kept)
        db.execute(batches.UPDATE, (*batches.encoded(kept), batch_id))
    return int(deleted)


def _prune_beyond(db: sqlite3.Connection, keep: int) -> int:
    """Delete all but the `keep` most recently written records."""
    total = 0
    for batch_id, count in db.execute(
        "SELECT id, records FROM shadow_batches ORDER BY id DESC"
    ).fetchall():
        if total + count < keep:
            total += count
            continue
        # This batch holds the oldest record kept: older batches go, and its older part.
        (deleted,) = db.execute(
            "SELECT COALESCE(SUM(records), 0) FROM shadow_batches WHERE id < ?", (batch_id,)
        ).fetchone()
        db.execute("DELETE FROM shadow_batches WHERE id < ?", (batch_id,))
        keep_here = keep - total
        if keep_here == 0:
            db.execute("DELETE FROM shadow_batches WHERE id = ?", (batch_id,))
            return int(deleted) + int(count)
        if keep_here < count:
            kept = batches.decode(
                db.execute("SELECT data FROM shadow_batches WHERE id = ?", (batch_id,)).fetchone()[
                    0
                ]
            )[-keep_here:]
            db.execute(batches.UPDATE, (*batches.encoded(kept), batch_id))
            deleted += count - keep_here
        return int(deleted)
    return 0
