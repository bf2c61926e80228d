"""The Redis store's change feed: a pub/sub subscription to its flag writes that outlives a
dropped connection (it subscribes again) and ends only when the store closes."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable

import structlog
from redis.asyncio import Redis, RedisCluster
from redis.asyncio.client import PubSub
from redis.exceptions import RedisClusterException, RedisError

_log = structlog.get_logger("gateway.state")


async def flag_notifications(
    client: Redis | RedisCluster,
    channel: str,
    where: str,
    closed: Callable[[], bool],
    timeout_s: float,
) -> AsyncIterator[None]:
    """Yield once per notification on `channel`, and once after each reconnection: what was
    published while the connection was down is lost, and the caller catches up by reading
    the store (its poll of the change counter does too)."""
    lost = False
    while not closed():
        pubsub: PubSub | None = None
        try:
            # A cluster client routes SUBSCRIBE by its slot map, loaded by this first.
            await client.initialize()
            pubsub = client.pubsub()
            await pubsub.subscribe(channel)
            if lost:
                _log.info("flag_notifications_resumed", store=where)
                lost = False
                yield None
            while not closed():
                # A bounded wait, so that a closed store ends the feed within a second.
                message = await pubsub.get_message(
                    ignore_subscribe_messages=True, timeout=min(1.0, timeout_s)
                )
                if message is not None:
                    yield None
        except (RedisError, RedisClusterException, OSError) as exc:
            if not lost:
                _log.warning("flag_notifications_lost", store=where, error=str(exc))
            lost = True
        finally:
            if pubsub is not None:
                with contextlib.suppress(RedisError, OSError, RuntimeError):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]
        if not closed():
            await asyncio.sleep(timeout_s)
