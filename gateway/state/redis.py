"""The Redis store: the state of several replicas behind a load balancer (`GATEWAY_STORE=
redis://host:port/db`).

`RedisStore` holds the connection and turns every failure of Redis into a `StoreUnavailable`
(never a raw redis-py error); every call has a bound (socket connect and read timeouts, one
quick retry for a connection dropped by a Redis restart, and an overall deadline). What it
stores lives in `redis_flags` (flags, the audit log, the epoch: compare-and-set by Lua script),
`redis_shared` (comparisons, predictions, guard windows) and `redis_feed` (pub/sub); the keys
and their hash tags in `redis_keys`.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any, TypeVar

from redis.asyncio import Redis, RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisClusterException, RedisError

from gateway.state import comparison_batches as batches
from gateway.state.errors import StoreUnavailable
from gateway.state.redis_feed import flag_notifications
from gateway.state.redis_flags import ReleaseRecords
from gateway.state.redis_keys import Keys, redacted
from gateway.state.redis_shared import SharedRecords
from gateway.state.shared import Claim, ShadowLabels, StoredPrediction, WindowTally
from gateway.state.store import AuditEntry, ComparisonRecord, DiffFn, FlagRecord, whole_value_diff

T = TypeVar("T")

MAX_AUDIT_LIMIT = 10_000


class RedisStore:
    """`Store` over one Redis database (or a Redis Cluster, `cluster=True`), its keys under
    `prefix` (several gateways can share one Redis). Opening connects to nothing: the first
    call does."""

    def __init__(
        self,
        url: str,
        *,
        prefix: str = "gateway",
        diff: DiffFn = whole_value_diff,
        timeout_s: float = 2.0,
        clock: Callable[[], float] = time.time,
        cluster: bool = False,
    ) -> None:
        self._keys = Keys(prefix)
        self._clock = clock
        self._timeout_s = timeout_s
        self._closed = False
        try:
            options: dict[str, Any] = {
                "socket_timeout": timeout_s,
                "socket_connect_timeout": timeout_s,
                # Once, and on a lost connection only (a pooled one a Redis restart closed):
                # after a timeout the command may have run, and a script must not run twice.
                "retry": Retry(
                    ExponentialBackoff(cap=0.2, base=0.02),
                    retries=1,
                    supported_errors=(RedisConnectionError,),
                ),
                "health_check_interval": 30,
            }
            self._client: Redis | RedisCluster = (
                RedisCluster.from_url(url, **options) if cluster else Redis.from_url(url, **options)
            )
        except (ValueError, RedisClusterException) as exc:
            raise StoreUnavailable(f"cannot use the Redis store {redacted(url)}: {exc}") from exc
        self._where = redacted(url)
        self._release = ReleaseRecords(self._client, self._keys, diff, clock)
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
        except (RedisError, RedisClusterException) as exc:
            raise StoreUnavailable(f"Redis at {self._where}: {what}: {exc}") from exc
        except OSError as exc:
            raise StoreUnavailable(f"Redis at {self._where}: {what}: {exc}") from exc

    # -- flags and the audit log -------------------------------------------------------------

    async def get_flag(self, key: str) -> FlagRecord | None:
        return await self._call("get a flag", lambda: self._release.get_flag(key))

    async def list_flags(self) -> list[FlagRecord]:
        return await self._call("list flags", self._release.list_flags)

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
        return await self._call(
            "write a flag",
            lambda: self._release.put_flag(
                key,
                flag,
                expected_version=expected_version,
                actor=actor,
                action=action,
                reason=reason,
                model=model,
                evidence=evidence,
            ),
        )

    async def audit(self, *, model: str | None = None, limit: int = 50) -> list[AuditEntry]:
        if not 1 <= limit <= MAX_AUDIT_LIMIT:
            raise ValueError(f"limit must be between 1 and {MAX_AUDIT_LIMIT}, not {limit}")
        return await self._call("read the audit log", lambda: self._release.audit(model, limit))

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
            id=0,  # the script numbers it
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
        return await self._call(
            "append to the audit log", lambda: self._release.append_audit(entry)
        )

    async def change_counter(self) -> int:
        return await self._call("read the change counter", self._release.change_counter)

    async def epoch(self) -> str:
        return await self._call("read the epoch", self._release.epoch)

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
