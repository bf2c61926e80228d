"""The Redis store: the state of several replicas behind a load balancer (`GATEWAY_STORE=
redis://host:port/db`).

A flag write is one Lua script: it checks the version `put_flag` read, then writes the flag,
its version, the audit entry and the change counter together and publishes a notification,
so two concurrent changes never both win and nothing is half-written. The diff is computed
in Python between the read and the script; the script's version check makes that safe (a
write without an expected version that loses the race reads again and retries).

Every call has a bound (socket connect and read timeouts, one quick retry for a connection
dropped by a Redis restart) and every failure of Redis is a `StoreUnavailable`, never a raw
redis-py error. Keys and their hash tags: `gateway.state.redis_keys`.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any, TypeVar

import msgspec
import structlog
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import RedisError

from gateway.state import comparison_batches as batches
from gateway.state.errors import StoreUnavailable, VersionConflict
from gateway.state.redis_feed import flag_notifications
from gateway.state.redis_keys import Keys, raw, redacted, text
from gateway.state.redis_shared import SharedRecords
from gateway.state.shared import Claim, ShadowLabels, StoredPrediction, WindowTally
from gateway.state.store import AuditEntry, ComparisonRecord, DiffFn, FlagRecord, whole_value_diff

_log = structlog.get_logger("gateway.state")
T = TypeVar("T")

MAX_AUDIT_LIMIT = 10_000

# Sorted keys make the encoding canonical, so "same flag" is a byte comparison (as SQLite's).
_canonical = msgspec.json.Encoder(order="sorted").encode
_decode_object = msgspec.json.Decoder(dict[str, Any]).decode
_encode = msgspec.msgpack.Encoder().encode
_decode_flag = msgspec.msgpack.Decoder(FlagRecord).decode
_decode_audit = msgspec.msgpack.Decoder(AuditEntry).decode

_AUDIT = """
local id = redis.call('INCR', KEYS[1])
redis.call('HSET', KEYS[2], id, ARGV[1])
redis.call('LPUSH', KEYS[3], id)
redis.call('LPUSH', KEYS[4], id)
return id
"""

# KEYS: audit next, entries, all, model, flags, versions, changes;
# ARGV: audit entry, flag key, version read, record, channel.
# Returns {1, audit id} when written, {0, the stored version} when the version moved.
_PUT_FLAG = (
    """
local stored = tonumber(redis.call('HGET', KEYS[6], ARGV[2]) or '0')
if stored ~= tonumber(ARGV[3]) then return {0, stored} end
redis.call('HSET', KEYS[5], ARGV[2], ARGV[4])
redis.call('HSET', KEYS[6], ARGV[2], stored + 1)
local id = (function()"""
    + _AUDIT
    + """end)()
redis.call('PUBLISH', ARGV[5], redis.call('INCR', KEYS[7]))
return {1, id}
"""
)

_RETRIES = 10
"""Re-reads of a write without an expected version that lost a race (each to a new write)."""


class RedisStore:
    """`Store` over one Redis database, its keys under `prefix` (several gateways can share
    one Redis). Opening connects to nothing: the first call does."""

    def __init__(
        self,
        url: str,
        *,
        prefix: str = "gateway",
        diff: DiffFn = whole_value_diff,
        timeout_s: float = 2.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.url = url
        self._keys = Keys(prefix)
        self._diff = diff
        self._clock = clock
        self._timeout_s = timeout_s
        self._closed = False
        try:
            self._client: Redis = Redis.from_url(
                url,
                socket_timeout=timeout_s,
                socket_connect_timeout=timeout_s,
                retry=Retry(ExponentialBackoff(cap=0.2, base=0.02), retries=1),
                health_check_interval=30,
            )
        except ValueError as exc:
            raise StoreUnavailable(f"cannot use the Redis store {redacted(url)}: {exc}") from exc
        self._where = redacted(url)
        self._put_flag = self._client.register_script(_PUT_FLAG)
        self._append_audit = self._client.register_script(_AUDIT)
        self._shared = SharedRecords(self._client, self._keys)

    async def _call(self, what: str, work: Callable[[], Awaitable[T]]) -> T:
        """Run `work`, bounded in time; every failure of Redis becomes `StoreUnavailable`."""
        if self._closed:
            raise StoreUnavailable(f"the store on {self._where} is closed")
        try:
            # A bound over the retry and both timeouts, should a socket ever hang past them.
            async with asyncio.timeout(self._timeout_s * 4 + 1.0):
                return await work()
        except TimeoutError as exc:
            raise StoreUnavailable(f"Redis at {self._where} did not answer ({what})") from exc
        except RedisError as exc:
            raise StoreUnavailable(f"Redis at {self._where}: {what}: {exc}") from exc
        except OSError as exc:
            raise StoreUnavailable(f"Redis at {self._where}: {what}: {exc}") from exc

    # -- flags and the audit log -------------------------------------------------------------

    async def get_flag(self, key: str) -> FlagRecord | None:
        data = await self._call("get a flag", lambda: self._client.hget(self._keys.flags, key))
        return None if data is None else _decode_flag(raw(data))

    async def list_flags(self) -> list[FlagRecord]:
        found = await self._call("list flags", lambda: self._client.hgetall(self._keys.flags))
        return [_decode_flag(raw(found[key])) for key in sorted(found, key=raw)]

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
        flag_text = _canonical(flag)
        after = _decode_object(flag_text)  # the stored form, as every later read returns it
        keys = self._keys
        for _ in range(_RETRIES):
            current = await self.get_flag(key)
            actual = 0 if current is None else current.version
            if expected_version is not None and expected_version != actual:
                raise VersionConflict(key, expected_version, actual)
            if current is not None and _canonical(current.flag) == flag_text:
                return current
            before = None if current is None else current.flag
            diff = self._diff(before, after)
            record = FlagRecord(
                key=key, flag=after, version=actual + 1, updated_at=self._clock(), updated_by=actor
            )
            entry = AuditEntry(
                id=0,  # the script numbers it
                at=record.updated_at,
                actor=actor,
                action=action,
                key=key,
                model=model,
                reason=reason,
                version_before=None if current is None else actual,
                version_after=record.version,
                diff=diff,
                evidence=evidence,
            )
            script_keys = [
                keys.audit_next,
                keys.audit_entries,
                keys.audit_all,
                keys.audit_model(model),
                keys.flags,
                keys.versions,
                keys.changes,
            ]
            args: list[bytes | str | int] = [
                _encode(entry),
                key,
                actual,
                _encode(record),
                keys.channel,
            ]
            written, value = await self._call(
                "write a flag",
                lambda: self._put_flag(keys=script_keys, args=args),  # noqa: B023
            )
            if written:
                return record
            if expected_version is not None:
                raise VersionConflict(key, expected_version, int(value))
        raise StoreUnavailable(f"flag {key!r}: {_RETRIES} concurrent writes in a row won the race")

    async def audit(self, *, model: str | None = None, limit: int = 50) -> list[AuditEntry]:
        if not 1 <= limit <= MAX_AUDIT_LIMIT:
            raise ValueError(f"limit must be between 1 and {MAX_AUDIT_LIMIT}, not {limit}")
        keys = self._keys
        index = keys.audit_all if model is None else keys.audit_model(model)

        async def read() -> list[AuditEntry]:
            ids = await self._client.lrange(index, 0, limit - 1)
            if not ids:
                return []
            entries = await self._client.hmget(keys.audit_entries, ids)
            return [
                msgspec.structs.replace(_decode_audit(raw(data)), id=int(entry_id))
                for entry_id, data in zip(ids, entries, strict=True)
                if data is not None
            ]

        return await self._call("read the audit log", read)

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
        entry = AuditEntry(
            id=0,
            at=self._clock() if at is None else at,
            actor=actor,
            action=action,
            key=key,
            model=model,
            reason=reason,
            version_before=None,
            version_after=None,
            diff=[] if diff is None else diff,
            evidence=evidence,
        )
        keys = self._keys
        script_keys = [keys.audit_next, keys.audit_entries, keys.audit_all, keys.audit_model(model)]
        entry_id = await self._call(
            "append to the audit log",
            lambda: self._append_audit(keys=script_keys, args=[_encode(entry)]),
        )
        return msgspec.structs.replace(entry, id=int(entry_id))

    async def change_counter(self) -> int:
        value = await self._call(
            "read the change counter", lambda: self._client.get(self._keys.changes)
        )
        return 0 if value is None else int(value)

    async def epoch(self) -> str:
        made = uuid.uuid4().hex

        async def read() -> str:
            # NX: the first caller's id stays; an emptied Redis gets a new one.
            await self._client.set(self._keys.epoch, made, nx=True)
            value = await self._client.get(self._keys.epoch)
            return made if value is None else text(value)

        return await self._call("read the epoch", read)

    def change_feed(self) -> AsyncIterator[None] | None:
        return flag_notifications(
            self._client, self._keys.channel, self._where, lambda: self._closed, self._timeout_s
        )

    # -- comparisons, predictions and windows (gateway.state.redis_shared) --------------------

    async def add_comparisons(self, records: Sequence[ComparisonRecord]) -> None:
        if records:
            await self._call(
                "write comparison records", lambda: self._shared.add_comparisons(records)
            )

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
        return await self._call(
            "read comparison records",
            lambda: self._shared.comparisons(model, query, payload=payload, limit=limit),
        )

    async def prune_comparisons(
        self, *, older_than: float | None = None, keep_newest: int | None = None
    ) -> int:
        if keep_newest is not None and keep_newest < 0:
            raise ValueError(f"keep_newest must not be negative, not {keep_newest}")
        return await self._call(
            "prune comparison records",
            lambda: self._shared.prune_comparisons(older_than, keep_newest),
        )

    async def add_predictions(
        self,
        model: str,
        predictions: Sequence[StoredPrediction],
        *,
        keep_s: float,
        max_entries: int,
    ) -> None:
        if predictions:
            await self._call(
                "store predictions",
                lambda: self._shared.add_predictions(
                    model, predictions, keep_s=keep_s, max_entries=max_entries, now=self._clock()
                ),
            )

    async def add_shadow_labels(self, model: str, labels: Sequence[ShadowLabels]) -> None:
        if labels:
            await self._call(
                "store shadow labels", lambda: self._shared.add_shadow_labels(model, labels)
            )

    async def claim_predictions(self, model: str, request_ids: Sequence[str]) -> dict[str, Claim]:
        return await self._call(
            "claim predictions",
            lambda: self._shared.claim_predictions(model, request_ids, self._clock()),
        )

    async def put_window_tally(
        self, model: str, flag_version: int, process: str, tally: WindowTally
    ) -> None:
        await self._call(
            "write a guard window",
            lambda: self._shared.put_window_tally(model, flag_version, process, tally),
        )

    async def window_tallies(self, model: str, flag_version: int) -> list[WindowTally]:
        return await self._call(
            "read a guard window", lambda: self._shared.window_tallies(model, flag_version)
        )

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        # A store closed from another event loop than the one it ran on cannot reach its
        # connections; they are dropped with the client.
        with contextlib.suppress(RedisError, OSError, RuntimeError):
            await self._client.aclose()
