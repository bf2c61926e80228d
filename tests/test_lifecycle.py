"""The app's parts stop in reverse order, and a part that hangs cannot hold up the shutdown."""

from __future__ import annotations

import asyncio

import pytest
from structlog.testing import capture_logs

from gateway.lifecycle import Lifecycle

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class _Part:
    def __init__(self, name: str, stopped: list[str]) -> None:
        self.name = name
        self._stopped = stopped

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        self._stopped.append(self.name)


class _Hangs(_Part):
    """A stop that never returns, as a network call without a timeout would."""

    async def stop(self) -> None:
        try:
            await asyncio.Event().wait()
        finally:
            self._stopped.append(f"{self.name} abandoned")


class _Fails(_Part):
    async def stop(self) -> None:
        raise RuntimeError("could not stop")


async def test_parts_stop_in_reverse_order() -> None:
    """Each part stops before the parts it was started after (what it needs)."""
    stopped: list[str] = []
    lifecycle = Lifecycle([_Part("store", stopped), None, _Part("shadow", stopped)])
    await lifecycle.start()
    await lifecycle.stop()
    assert stopped == ["shadow", "store"]


async def test_a_part_that_hangs_is_abandoned_and_the_rest_still_stop() -> None:
    """A stop that never finishes is cancelled after the bound and logged by name; the parts
    after it stop, and the shutdown returns."""
    stopped: list[str] = []
    lifecycle = Lifecycle(
        [_Part("store", stopped), _Hangs("follower", stopped), _Part("shadow", stopped)],
        stop_timeout_s=0.2,
    )
    with capture_logs() as logs:
        await asyncio.wait_for(lifecycle.stop(), timeout=30)
    assert stopped == ["shadow", "follower abandoned", "store"]
    assert [entry for entry in logs if entry["event"] == "part_did_not_stop"] == [
        {"event": "part_did_not_stop", "log_level": "error", "part": "_Hangs", "timeout_s": 0.2}
    ]


async def test_a_part_that_fails_to_stop_fails_the_shutdown() -> None:
    """An error from a part's stop is raised, not swallowed by the bound."""
    lifecycle = Lifecycle([_Fails("store", [])], stop_timeout_s=5)
    with pytest.raises(RuntimeError, match="could not stop"):
        await lifecycle.stop()
