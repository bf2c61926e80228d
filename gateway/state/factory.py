"""The store the settings name: the embedded SQLite file, or a Redis shared by replicas."""

from __future__ import annotations

from gateway.settings import Settings
from gateway.state.redis import RedisStore
from gateway.state.sqlite import SQLiteStore
from gateway.state.store import DiffFn, Store, whole_value_diff


def open_store(settings: Settings, *, diff: DiffFn = whole_value_diff) -> Store:
    """Open the store of `settings.store` (validated with the settings).

    Opening a Redis store connects to nothing, so a Redis that is down at start-up does not
    stop the gateway: its first calls raise `StoreUnavailable`, and the flag follower serves
    `flags/` until Redis answers.
    """
    if settings.store_kind == "redis":
        return RedisStore(
            settings.store,
            prefix=settings.redis_prefix,
            diff=diff,
            cluster=settings.redis_cluster,
        )
    return SQLiteStore(settings.state_path, diff=diff)
