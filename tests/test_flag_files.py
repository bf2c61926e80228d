"""The flags directory as a source: reading every flagd file, and watching for edits.

Async tests run on anyio's pytest plugin (`@pytest.mark.anyio`, asyncio backend).
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from gateway.state import (
    FlagFileError,
    FlagFileRemoved,
    FlagFilesInvalid,
    FlagFileWatcher,
    read_flag_files,
)
from gateway.state import files as files_module

Change = tuple[Path, dict[str, Any] | FlagFileError]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def flag(percent: int = 0, **overrides: Any) -> dict[str, Any]:
    """A flagd flag whose variants are routes to model versions."""
    body: dict[str, Any] = {
        "state": "ENABLED",
        "defaultVariant": "baseline",
        "variants": {"baseline": {"serve": "1"}, "candidate": {"serve": "2"}},
        "targeting": {"fractional": [["candidate", percent], ["baseline", 100 - percent]]},
    }
    body.update(overrides)
    return body


def document(**flags: dict[str, Any]) -> dict[str, Any]:
    return {"$schema": "https://flagd.dev/schema/v0/flags.json", "flags": flags}


def write(path: Path, content: dict[str, Any] | str) -> Path:
    text = content if isinstance(content, str) else json.dumps(content)
    path.write_text(text, encoding="utf-8")
    return path


class Recorder:
    """An on_change callback that queues what it is given."""

    def __init__(self) -> None:
        self.changes: asyncio.Queue[Change] = asyncio.Queue()

    async def __call__(self, path: Path, change: dict[str, Any] | FlagFileError) -> None:
        await self.changes.put((path, change))

    async def next(self, timeout: float = 1.0) -> Change:
        return await asyncio.wait_for(self.changes.get(), timeout)


@pytest.fixture
async def watched(tmp_path: Path) -> AsyncIterator[tuple[Path, Recorder]]:
    """A flags directory holding `digits.json`, watched every 0.05 s, and what the watcher saw."""
    write(tmp_path / "digits.json", document(**{"digits-release": flag(10)}))
    recorder = Recorder()
    watcher = FlagFileWatcher(tmp_path, recorder, interval_s=0.05)
    await watcher.start()
    yield tmp_path, recorder
    await watcher.stop()


def test_read_flag_files_parses_every_document(tmp_path: Path) -> None:
    """Every `*.json` file is read as a flagd document, keyed by file name; others are ignored."""
    write(tmp_path / "digits.json", document(**{"digits-release": flag(10)}))
    write(
        tmp_path / "iris.json",
        {"flags": {"iris-release": flag()}, "$evaluators": {"beta": {"in": ["beta", "x"]}}},
    )
    write(tmp_path / "notes.txt", "not a flag file")
    write(tmp_path / ".digits.json", "{ editor leftover")

    docs = read_flag_files(tmp_path)

    assert list(docs) == ["digits.json", "iris.json"]
    assert docs["digits.json"].flags == {"digits-release": flag(10)}
    assert docs["digits.json"].raw == document(**{"digits-release": flag(10)})
    assert docs["iris.json"].evaluators == {"beta": {"in": ["beta", "x"]}}


def test_malformed_files_reported_by_name_and_the_rest_still_read(tmp_path: Path) -> None:
    """Each bad file is reported with its name after every file was read; valid ones come along."""
    write(tmp_path / "a-broken.json", '{"flags": {')
    write(tmp_path / "b-good.json", document(**{"good": flag()}))
    write(tmp_path / "c-stateless.json", document(bad={"variants": {"on": True}}))

    with pytest.raises(FlagFilesInvalid) as caught:
        read_flag_files(tmp_path)

    errors = caught.value.errors
    assert sorted(errors) == ["a-broken.json", "c-stateless.json"]
    assert errors["a-broken.json"].path == tmp_path / "a-broken.json"
    assert "state" in str(errors["c-stateless.json"])
    assert "a-broken.json" in str(caught.value)
    assert "c-stateless.json" in str(caught.value)
    assert list(caught.value.docs) == ["b-good.json"]


@pytest.mark.parametrize(
    ("content", "complaint"),
    [
        pytest.param("[]", "object", id="not-an-object"),
        pytest.param({"flags": [{"key": "k", **flag()}]}, "object", id="flags-as-array"),
        pytest.param({"metadata": {}}, "flags", id="no-flags"),
        pytest.param(document(k=flag(state="ON")), "state", id="bad-state"),
        pytest.param(document(k=flag(variants={})), "at least one", id="no-variants"),
        pytest.param(document(k=flag(defaultVariant="gone")), "gone", id="unknown-default"),
        pytest.param(
            document(k=flag(variants={"a": True, "b": "x"}, defaultVariant="a")),
            "boolean, string",
            id="mixed-variants",
        ),
        pytest.param(document(k=flag(metadata={"owner": {"x": 1}})), "metadata", id="meta"),
        pytest.param(document(**{"": flag()}), "empty", id="empty-key"),
    ],
)
def test_structurally_invalid_documents_are_rejected(
    tmp_path: Path, content: dict[str, Any] | str, complaint: str
) -> None:
    """What the flagd schema forbids is reported for the file, with what is wrong."""
    write(tmp_path / "bad.json", content)

    with pytest.raises(FlagFilesInvalid) as caught:
        read_flag_files(tmp_path)

    assert complaint in str(caught.value.errors["bad.json"])


def test_flag_defined_in_two_files_is_reported(tmp_path: Path) -> None:
    """A flag key that an earlier file already defines makes the later file invalid."""
    write(tmp_path / "a.json", document(shared=flag(), own=flag()))
    write(tmp_path / "b.json", document(shared=flag(50)))

    with pytest.raises(FlagFilesInvalid) as caught:
        read_flag_files(tmp_path)

    assert "already defined in a.json" in str(caught.value.errors["b.json"])
    assert list(caught.value.docs) == ["a.json"]


def test_missing_directory_is_reported(tmp_path: Path) -> None:
    """A flags directory that does not exist is an error, not an empty set of flags."""
    with pytest.raises(FlagFilesInvalid, match="no such directory"):
        read_flag_files(tmp_path / "absent")


@pytest.mark.anyio
async def test_watcher_notices_an_edit_within_a_second(
    watched: tuple[Path, Recorder],
) -> None:
    """An edited file reaches on_change, parsed, within a second; so does a new file."""
    flags_dir, recorder = watched
    edited = document(**{"digits-release": flag(25)})
    started = time.monotonic()

    write(flags_dir / "digits.json", edited)
    path, change = await recorder.next(timeout=1.0)

    assert time.monotonic() - started < 1.0
    assert (path, change) == (flags_dir / "digits.json", edited)
    write(flags_dir / "iris.json", document(**{"iris-release": flag()}))
    assert await recorder.next() == (flags_dir / "iris.json", document(**{"iris-release": flag()}))


@pytest.mark.anyio
async def test_watcher_passes_a_malformed_edit_as_an_error_and_keeps_watching(
    watched: tuple[Path, Recorder],
) -> None:
    """A malformed edit arrives as a FlagFileError naming the file; the fix arrives after it."""
    flags_dir, recorder = watched

    write(flags_dir / "digits.json", '{"flags": {"digits-release": ')
    path, change = await recorder.next()

    assert path == flags_dir / "digits.json"
    assert isinstance(change, FlagFileError)
    assert "digits.json" in str(change)
    fixed = document(**{"digits-release": flag(5)})
    write(flags_dir / "digits.json", fixed)
    assert await recorder.next() == (flags_dir / "digits.json", fixed)


@pytest.mark.anyio
async def test_watcher_reports_a_removed_file(watched: tuple[Path, Recorder]) -> None:
    """Deleting a flag file is reported as FlagFileRemoved for that file."""
    flags_dir, recorder = watched

    (flags_dir / "digits.json").unlink()
    path, change = await recorder.next()

    assert path == flags_dir / "digits.json"
    assert isinstance(change, FlagFileRemoved)


@pytest.mark.anyio
async def test_watcher_reports_each_content_once(tmp_path: Path) -> None:
    """Touching a file or rewriting the same bytes reports nothing; each new content once."""
    path = write(tmp_path / "digits.json", document(k=flag(10)))
    recorder = Recorder()
    watcher = FlagFileWatcher(tmp_path, recorder)
    await watcher.start()  # not polling by itself within this test's few milliseconds

    await watcher.poll()
    os.utime(path, ns=(time.time_ns(), time.time_ns() + 5_000_000_000))
    write(path, document(k=flag(10)))
    await watcher.poll()
    assert recorder.changes.empty()

    write(path, document(k=flag(20)))
    await watcher.poll()
    await watcher.poll()
    await watcher.stop()
    assert recorder.changes.qsize() == 1
    assert await recorder.next() == (path, document(k=flag(20)))


@pytest.mark.anyio
async def test_watcher_survives_a_failing_callback(tmp_path: Path) -> None:
    """A callback that raises is logged; the watcher goes on reporting later changes."""
    path = write(tmp_path / "digits.json", document(k=flag(10)))
    seen: list[dict[str, Any] | FlagFileError] = []

    async def flaky(_path: Path, change: dict[str, Any] | FlagFileError) -> None:
        seen.append(change)
        if len(seen) == 1:
            raise RuntimeError("callback failed")

    watcher = FlagFileWatcher(tmp_path, flaky)
    await watcher.start()
    write(path, document(k=flag(20)))
    await watcher.poll()
    write(path, document(k=flag(30)))
    await watcher.poll()
    await watcher.stop()

    assert seen == [document(k=flag(20)), document(k=flag(30))]


@pytest.mark.anyio
async def test_watcher_reports_an_oversized_file_without_reading_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file over the size bound is passed on as an error rather than read and parsed."""
    monkeypatch.setattr(files_module, "MAX_FLAG_FILE_BYTES", 64)
    recorder = Recorder()
    watcher = FlagFileWatcher(tmp_path, recorder)
    await watcher.start()

    write(tmp_path / "big.json", document(k=flag()))
    await watcher.poll()
    await watcher.stop()

    path, change = await recorder.next()
    assert path == tmp_path / "big.json"
    assert isinstance(change, FlagFileError)
    assert "larger than 64 bytes" in str(change)


@pytest.mark.anyio
async def test_watcher_start_and_stop(tmp_path: Path) -> None:
    """start() runs one task (a second start is refused); stop() ends it and can be repeated."""
    watcher = FlagFileWatcher(tmp_path, Recorder(), interval_s=0.05)
    await watcher.start()
    assert watcher.running
    with pytest.raises(RuntimeError, match="already running"):
        await watcher.start()

    await watcher.stop()
    await watcher.stop()

    assert not watcher.running
