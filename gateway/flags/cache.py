"""A bounded decision cache whose eviction costs nothing per request.

Two generations: entries go into the young dict; when it is full it becomes the old one and
the previous old one is dropped whole. A hit in the old generation is copied into the young
one, so entries in steady use survive. At most `capacity` entries are held.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class DecisionCache(Generic[K, V]):
    def __init__(self, capacity: int) -> None:
        if capacity < 2:
            raise ValueError("a decision cache holds at least 2 entries")
        self._generation_size = capacity // 2
        self._young: dict[K, V] = {}
        self._old: dict[K, V] = {}

    def get(self, key: K) -> V | None:
        value = self._young.get(key)
        if value is None:
            value = self._old.get(key)
            if value is not None:
                self.put(key, value)
        return value

    def put(self, key: K, value: V) -> None:
        young = self._young
        if len(young) >= self._generation_size:
            self._old = young
            self._young = young = {}
        young[key] = value

    def __len__(self) -> int:
        """Entries held (one promoted from the old generation counts twice)."""
        return len(self._young) + len(self._old)
