"""The Redis store's records beside flags: shadow comparisons, predictions waiting for
feedback, guard windows (see `gateway.state.redis_keys` for the keys).

Comparison records are one hash field each (a write sequence number, zero-padded so that
members of one score sort in writing order), indexed per model by time and globally by the
order they were written, which is what the two retention rules cut by. A prediction is a hash
field of its model's group, with its expiry and its writing order in sorted sets; claims and
shadows' labels are changed by scripts, so two processes never both claim one. Every value
is msgpack (msgspec); nothing is pickled.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence
from typing import Any

import msgspec
from redis.asyncio import Redis, RedisCluster

from gateway.state import comparison_batches as batches
from gateway.state.redis_keys import Keys, raw, text
from gateway.state.shared import Claim, ShadowLabels, StoredPrediction, WindowTally
from gateway.state.store import ComparisonRecord

WINDOW_KEEP_S = 86400
"""A window's figures are deleted a day after their last write."""
PREDICTION_TTL_MARGIN_S = 60
"""A model's prediction keys outlive their newest entry's keep_s by this, then Redis drops them."""
PRUNE_CHUNK = 5000
"""Records one pruning script deletes at most, so that Redis is never blocked for long."""
READ_CHUNK = 10_000

_encode = msgspec.msgpack.Encoder().encode
_decode_record = msgspec.msgpack.Decoder(ComparisonRecord).decode
_decode_prediction = msgspec.msgpack.Decoder(StoredPrediction).decode
_decode_shadow = msgspec.msgpack.Decoder(tuple[str, tuple[str, ...]]).decode
_decode_tally = msgspec.msgpack.Decoder(WindowTally).decode
_FRAME = struct.Struct(">I")

# KEYS: records, written, at:<model>...; ARGV: cut, chunk. Deletes records with at < cut.
_PRUNE_OLDER = """
local deleted, budget = 0, tonumber(ARGV[2])
for i = 3, #KEYS do
  local members = redis.call('ZRANGEBYSCORE', KEYS[i], '-inf', '(' .. ARGV[1], 'LIMIT', 0, budget)
  for _, member in ipairs(members) do
    redis.call('ZREM', KEYS[i], member)
    deleted = deleted + redis.call('HDEL', KEYS[1], member)
    redis.call('ZREM', KEYS[2], member)
  end
  budget = budget - #members
  if budget <= 0 then break end
end
return deleted
"""

# KEYS: records, written, at:<model>...; ARGV: keep, chunk, model... (aligned with KEYS[3..]).
# Deletes all but the `keep` most recently written records.
_PRUNE_BEYOND = """
local excess = redis.call('ZCARD', KEYS[2]) - tonumber(ARGV[1])
if excess <= 0 then return 0 end
local by_model = {}
for i = 3, #ARGV do by_model[ARGV[i]] = KEYS[i] end
local members = redis.call('ZRANGE', KEYS[2], 0, math.min(excess, tonumber(ARGV[2])) - 1)
local deleted = 0
for _, member in ipairs(members) do
  deleted = deleted + redis.call('HDEL', KEYS[1], member)
  redis.call('ZREM', KEYS[2], member)
  local model = string.sub(member, 22)
  if by_model[model] then redis.call('ZREM', by_model[model], member) end
end
return deleted
"""

_DROP_PREDICTION = """
local function drop(id)
  redis.call('HDEL', KEYS[1], id)
  redis.call('ZREM', KEYS[2], id)
  redis.call('ZREM', KEYS[3], id)
  redis.call('SREM', KEYS[5], id)
  redis.call('HDEL', KEYS[6], id)
end
"""

# KEYS: data, expires, order, next, claimed, shadows;
# ARGV: now, max_entries, ttl_s, then (request id, expires at, data) per prediction.
_ADD_PREDICTIONS = (
    _DROP_PREDICTION
    + """
for i = 4, #ARGV, 3 do
  local id = ARGV[i]
  drop(id)  -- a request id stored again starts afresh: unclaimed, without old shadows
  redis.call('HSET', KEYS[1], id, ARGV[i + 2])
  redis.call('ZADD', KEYS[2], ARGV[i + 1], id)
  redis.call('ZADD', KEYS[3], redis.call('INCR', KEYS[4]), id)
end
for _, id in ipairs(redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', '(' .. ARGV[1])) do drop(id) end
local excess = redis.call('ZCARD', KEYS[3]) - tonumber(ARGV[2])
if excess > 0 then
  for _, id in ipairs(redis.call('ZRANGE', KEYS[3], 0, excess - 1)) do drop(id) end
end
for i = 1, #KEYS do redis.call('EXPIRE', KEYS[i], ARGV[3]) end
return 0
"""
)

# KEYS: data, shadows; ARGV: (request id, framed labels) pairs.
_ADD_SHADOW_LABELS = """
for i = 1, #ARGV, 2 do
  if redis.call('HEXISTS', KEYS[1], ARGV[i]) == 1 then
    local framed = redis.call('HGET', KEYS[2], ARGV[i]) or ''
    redis.call('HSET', KEYS[2], ARGV[i], framed .. ARGV[i + 1])
  end
end
return 0
"""

# KEYS: data, expires, order, next, claimed, shadows; ARGV: now, request id...
# Returns per id: {0} unknown, {1} duplicate, {2, data, shadows} claimed now.
_CLAIM = """
local now, found = tonumber(ARGV[1]), {}
for i = 2, #ARGV do
  local id = ARGV[i]
  local expires = redis.call('ZSCORE', KEYS[2], id)
  local data = redis.call('HGET', KEYS[1], id)
  if not expires or not data or tonumber(expires) < now then
    found[#found + 1] = {0}
  elseif redis.call('SADD', KEYS[5], id) == 0 then
    found[#found + 1] = {1}
  else
    found[#found + 1] = {2, data, redis.call('HGET', KEYS[6], id) or ''}
  end
end
return found
"""


def _member(seq: int) -> str:
    return f"{seq:020d}"


class SharedRecords:
    """Comparisons, predictions and windows on one Redis client (calls raise redis-py's
    errors; the store turns them into `StoreUnavailable`)."""

    def __init__(self, client: Redis | RedisCluster, keys: Keys) -> None:
        self._client = client
        self._keys = keys
        self._prune_older = client.register_script(_PRUNE_OLDER)
        self._prune_beyond = client.register_script(_PRUNE_BEYOND)
        self._add_predictions = client.register_script(_ADD_PREDICTIONS)
        self._add_shadow_labels = client.register_script(_ADD_SHADOW_LABELS)
        self._claim = client.register_script(_CLAIM)

    # -- shadow comparisons ------------------------------------------------------------------

    async def add_comparisons(self, records: Sequence[ComparisonRecord]) -> None:
        keys = self._keys
        last = int(await self._client.incrby(keys.shadow_next, len(records)))
        fields: dict[str, bytes] = {}
        written: dict[str, float] = {}
        by_model: dict[str, dict[str, float]] = {}
        for seq, record in enumerate(records, start=last - len(records) + 1):
            # The member carries its model after the padded sequence, for _PRUNE_BEYOND.
            member = f"{_member(seq)}:{record.model}"
            fields[member] = _encode(record)
            written[member] = seq
            by_model.setdefault(record.model, {})[member] = record.at
        async with self._client.pipeline(transaction=True) as pipe:
            pipe.hset(keys.shadow_records, mapping=fields)  # type: ignore[arg-type]
            pipe.zadd(keys.shadow_written, written)
            pipe.sadd(keys.shadow_models, *by_model)
            for model, members in by_model.items():
                pipe.zadd(keys.shadow_at(model), members)
            await pipe.execute()

    async def comparisons(
        self, model: str, query: batches.Query, *, payload: bool, limit: int | None
    ) -> list[ComparisonRecord]:
        filtered = query.primary or query.shadow or query.disagreements_only
        # Newest first by time; among equal times the later written (greater member) first.
        members: list[bytes] = await self._client.zrevrangebyscore(  # type: ignore[assignment]
            self._keys.shadow_at(model),
            "+inf" if query.until is None else f"({query.until!r}",
            "-inf" if query.since is None else repr(query.since),
            start=0 if limit is not None and not filtered else None,
            num=limit if limit is not None and not filtered else None,
        )
        found: list[ComparisonRecord] = []
        for start in range(0, len(members), READ_CHUNK):
            chunk = members[start : start + READ_CHUNK]
            for data in await self._client.hmget(self._keys.shadow_records, chunk):
                if data is None:
                    continue  # pruned between the two reads
                record = _decode_record(raw(data))
                if not query.keeps(record):
                    continue
                if not payload:
                    record = msgspec.structs.replace(
                        record, primary_output=None, shadow_output=None, inputs=None
                    )
                found.append(record)
                if limit is not None and len(found) >= limit:
                    return found
        return found

    async def prune_comparisons(self, older_than: float | None, keep_newest: int | None) -> int:
        keys = self._keys
        models = sorted(text(m) for m in await self._client.smembers(keys.shadow_models))
        at_keys = [keys.shadow_at(model) for model in models]
        script_keys = [keys.shadow_records, keys.shadow_written, *at_keys]
        deleted = 0
        if older_than is not None and not math.isnan(older_than):
            cut = "+inf" if older_than == math.inf else repr(older_than)
            while True:
                gone = int(await self._prune_older(keys=script_keys, args=[cut, PRUNE_CHUNK]))
                deleted += gone
                if gone < PRUNE_CHUNK:
                    break
        if keep_newest is not None:
            while True:
                gone = int(
                    await self._prune_beyond(
                        keys=script_keys, args=[keep_newest, PRUNE_CHUNK, *models]
                    )
                )
                deleted += gone
                if gone < PRUNE_CHUNK:
                    break
        return deleted

    # -- predictions waiting for feedback ----------------------------------------------------

    async def add_predictions(
        self,
        model: str,
        predictions: Sequence[StoredPrediction],
        *,
        keep_s: float,
        max_entries: int,
        now: float,
    ) -> None:
        args: list[Any] = [repr(now), max_entries, math.ceil(keep_s) + PREDICTION_TTL_MARGIN_S]
        for item in predictions:
            args += [item.request_id, repr(item.at + keep_s), _encode(item)]
        await self._add_predictions(keys=self._keys.predictions(model), args=args)

    async def add_shadow_labels(self, model: str, labels: Sequence[ShadowLabels]) -> None:
        args: list[Any] = []
        for item in labels:
            encoded = _encode((item.version, item.labels))
            args += [item.request_id, _FRAME.pack(len(encoded)) + encoded]
        data, *_, shadows = self._keys.predictions(model)
        await self._add_shadow_labels(keys=[data, shadows], args=args)

    async def claim_predictions(
        self, model: str, request_ids: Sequence[str], now: float
    ) -> dict[str, Claim]:
        unique = list(dict.fromkeys(request_ids))
        if not unique:
            return {}
        answers = await self._claim(keys=self._keys.predictions(model), args=[repr(now), *unique])
        claims: dict[str, Claim] = {}
        for request_id, answer in zip(unique, answers, strict=True):
            if answer[0] == 0:
                claims[request_id] = "unknown"
            elif answer[0] == 1:
                claims[request_id] = "duplicate"
            else:
                claims[request_id] = msgspec.structs.replace(
                    _decode_prediction(answer[1]), shadows=_shadows(answer[2])
                )
        return claims

    # -- guard windows -----------------------------------------------------------------------

    async def put_window_tally(
        self, model: str, flag_version: int, process: str, tally: WindowTally
    ) -> None:
        key = self._keys.window(model, flag_version)
        async with self._client.pipeline(transaction=True) as pipe:
            pipe.hset(key, process, _encode(tally))
            pipe.expire(key, WINDOW_KEEP_S)
            await pipe.execute()

    async def window_tallies(self, model: str, flag_version: int) -> list[WindowTally]:
        found = await self._client.hgetall(self._keys.window(model, flag_version))
        return [_decode_tally(raw(found[process])) for process in sorted(found, key=raw)]


def _shadows(framed: bytes) -> dict[str, tuple[str, ...]]:
    """The labels appended by `_ADD_SHADOW_LABELS`, a later one of a version replacing an
    earlier."""
    shadows: dict[str, tuple[str, ...]] = {}
    offset = 0
    while offset < len(framed):
        (size,) = _FRAME.unpack_from(framed, offset)
        offset += _FRAME.size
        version, labels = _decode_shadow(framed[offset : offset + size])
        shadows[version] = labels
        offset += size
    return shadows
