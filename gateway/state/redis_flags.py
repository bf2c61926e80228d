"""The Redis store's release state: flags with versions, the change counter, the audit log
and the epoch, all under the `{P:release}` hash tag (`gateway.state.redis_keys`).

A flag write is one Lua script: it checks the version `put` read, then writes the flag, its
version, the audit entry and the change counter together and publishes a notification, so
two concurrent changes never both win and nothing is half-written. The diff is computed in
Python between the read and the script; the script's version check makes that safe (a write
without an expected version that loses the race reads again and writes on top).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import msgspec
from redis.asyncio import Redis, RedisCluster

from gateway.state.errors import StoreUnavailable, VersionConflict
from gateway.state.redis_keys import Keys, raw, text
from gateway.state.store import AuditEntry, DiffFn, FlagRecord

# Sorted keys make the encoding canonical, so "same flag" is a byte comparison (as SQLite's).
_canonical = msgspec.json.Encoder(order="sorted").encode
_decode_object = msgspec.json.Decoder(dict[str, Any]).decode
_encode = msgspec.msgpack.Encoder().encode
_decode_flag = msgspec.msgpack.Decoder(FlagRecord).decode
_decode_audit = msgspec.msgpack.Decoder(AuditEntry).decode

# KEYS: audit next, entries, all, model; ARGV: the entry (its id 0: the reader sets it).
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

RETRIES = 10
"""Re-reads of a write without an expected version that lost a race (each to a new write)."""


class ReleaseRecords:
    """Flags, the audit log, the counter and the epoch on one Redis client (calls raise
    redis-py's errors; the store turns them into `StoreUnavailable`)."""

    def __init__(
        self, client: Redis | RedisCluster, keys: Keys, diff: DiffFn, clock: Callable[[], float]
    ) -> None:
        self._client = client
        self._keys = keys
        self._diff = diff
        self._clock = clock
        self._put_flag = client.register_script(_PUT_FLAG)
        self._append_audit = client.register_script(_AUDIT)

    async def get_flag(self, key: str) -> FlagRecord | None:
        data = await self._client.hget(self._keys.flags, key)
        return None if data is None else _decode_flag(raw(data))

    async def list_flags(self) -> list[FlagRecord]:
        found = await self._client.hgetall(self._keys.flags)
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
        evidence: dict[str, Any] | None,
    ) -> FlagRecord:
        flag_text = _canonical(flag)
        after = _decode_object(flag_text)  # the stored form, as every later read returns it
        keys = self._keys
        script_keys = [*self._audit_keys(model), keys.flags, keys.versions, keys.changes]
        for _ in range(RETRIES):
            current = await self.get_flag(key)
            actual = 0 if current is None else current.version
            if expected_version is not None and expected_version != actual:
                raise VersionConflict(key, expected_version, actual)
            if current is not None and _canonical(current.flag) == flag_text:
                return current
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
                diff=self._diff(None if current is None else current.flag, after),
                evidence=evidence,
            )
            args: list[bytes | str | int] = [_encode(entry), key, actual, _encode(record)]
            args.append(keys.channel)
            written, value = await self._put_flag(keys=script_keys, args=args)
            if written:
                return record
            if expected_version is not None:
                raise VersionConflict(key, expected_version, int(value))
        raise StoreUnavailable(f"flag {key!r}: {RETRIES} concurrent writes in a row won the race")

    def _audit_keys(self, model: str) -> list[str]:
        keys = self._keys
        return [keys.audit_next, keys.audit_entries, keys.audit_all, keys.audit_model(model)]

    async def audit(self, model: str | None, limit: int) -> list[AuditEntry]:
        keys = self._keys
        index = keys.audit_all if model is None else keys.audit_model(model)
        ids = await self._client.lrange(index, 0, limit - 1)
        if not ids:
            return []
        entries = await self._client.hmget(keys.audit_entries, ids)
        return [
            msgspec.structs.replace(_decode_audit(raw(data)), id=int(entry_id))
            for entry_id, data in zip(ids, entries, strict=True)
            if data is not None
        ]

    async def append_audit(self, entry: AuditEntry) -> AuditEntry:
        entry_id = await self._append_audit(
            keys=self._audit_keys(entry.model), args=[_encode(entry)]
        )
        return msgspec.structs.replace(entry, id=int(entry_id))

    async def change_counter(self) -> int:
        value = await self._client.get(self._keys.changes)
        return 0 if value is None else int(value)

    async def epoch(self) -> str:
        made = uuid.uuid4().hex
        # NX: the first caller's id stays; an emptied Redis gets a new one.
        await self._client.set(self._keys.epoch, made, nx=True)
        value = await self._client.get(self._keys.epoch)
        return made if value is None else text(value)
