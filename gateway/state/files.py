"""The flags directory as a source: every `*.json` file in it is one flagd document.

`read_flag_files` reads the directory once (at start); `FlagFileWatcher` then polls it and hands
each changed file to a callback, parsed or as the error that explains why it is not valid. Polling
(stat, then a content hash) needs no dependency and works on every filesystem, bind mounts and
Kubernetes ConfigMap symlink swaps included.

Validation here is structural, per the flagd schema's provider form (`flags` an object of flags,
each with `state` and non-empty, same-typed `variants`, a `defaultVariant` that names one of them,
metadata of scalars). What a variant's value means (a route to model versions) and whether those
versions exist is checked where flags are understood, not here.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import stat
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Literal

import msgspec
import structlog

from gateway.state.errors import FlagFileError, FlagFileRemoved, FlagFilesInvalid

_log = structlog.get_logger("gateway.state")

MAX_FLAG_FILE_BYTES = 1024 * 1024
# A file modified this recently is hashed on every poll even when its stat looks unchanged: on a
# filesystem with coarse timestamps, a same-size rewrite within one tick leaves mtime and size as
# they were, and only the content tells.
_RACY_NS = 2_000_000_000

OnFlagFileChange = Callable[[Path, dict[str, Any] | FlagFileError], Awaitable[None]]
"""Called with a changed file and its parsed document, or the error that makes it invalid."""

Scalar = str | bool | int | float


class FlagFileDoc(msgspec.Struct, frozen=True, kw_only=True):
    """One valid flagd document, from the file `name` (e.g. `digits.json`)."""

    name: str
    flags: dict[str, dict[str, Any]]
    evaluators: dict[str, Any]
    metadata: dict[str, Scalar]
    raw: dict[str, Any]


class _Document(msgspec.Struct):
    flags: dict[str, dict[str, Any]]
    evaluators: dict[str, Any] = msgspec.field(name="$evaluators", default_factory=dict)
    metadata: dict[str, Scalar] = msgspec.field(default_factory=dict)
    schema: str | None = msgspec.field(name="$schema", default=None)


class _Flag(msgspec.Struct):
    state: Literal["ENABLED", "DISABLED"]
    variants: dict[str, Any]
    default_variant: str | None = msgspec.field(name="defaultVariant", default=None)
    metadata: dict[str, Scalar] = msgspec.field(default_factory=dict)


_decode_json = msgspec.json.Decoder(dict[str, Any]).decode


def _variant_kind(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def _check_flag(key: str, body: dict[str, Any]) -> None:
    try:
        flag = msgspec.convert(body, _Flag)
    except msgspec.ValidationError as exc:
        raise ValueError(f"flag {key!r}: {exc}") from None
    if not flag.variants:
        raise ValueError(f"flag {key!r}: variants must name at least one variant")
    if "" in flag.variants:
        raise ValueError(f"flag {key!r}: a variant name must not be empty")
    kinds = {_variant_kind(value) for value in flag.variants.values()}
    if len(kinds) != 1 or not kinds <= {"boolean", "number", "string", "object"}:
        raise ValueError(
            f"flag {key!r}: variants must all be booleans, numbers, strings or objects, "
            f"found {', '.join(sorted(kinds))}"
        )
    if flag.default_variant is not None and flag.default_variant not in flag.variants:
        raise ValueError(
            f"flag {key!r}: defaultVariant {flag.default_variant!r} is not one of its variants"
        )


def parse_flag_document(path: Path, data: bytes) -> FlagFileDoc:
    """Parse and check the bytes of one flag file; raise `FlagFileError` naming the file."""
    try:
        raw = _decode_json(data)
        document = msgspec.convert(raw, _Document)
        if "" in document.flags:
            raise ValueError("a flag key must not be empty")
        for key, body in document.flags.items():
            _check_flag(key, body)
    except (msgspec.DecodeError, msgspec.ValidationError, ValueError) as exc:
        raise FlagFileError(path, f"not a valid flagd document: {exc}") from exc
    return FlagFileDoc(
        name=path.name,
        flags=document.flags,
        evaluators=document.evaluators,
        metadata=document.metadata,
        raw=raw,
    )


def _read_bounded(path: Path) -> bytes:
    with path.open("rb") as handle:
        data = handle.read(MAX_FLAG_FILE_BYTES + 1)
    if len(data) > MAX_FLAG_FILE_BYTES:
        raise FlagFileError(path, f"larger than {MAX_FLAG_FILE_BYTES} bytes")
    return data


def parse_flag_file(path: Path) -> FlagFileDoc:
    """Read and parse one flag file; raise `FlagFileError` naming the file."""
    try:
        data = _read_bounded(path)
    except OSError as exc:
        raise FlagFileError(path, f"cannot read: {exc.strerror or exc}") from exc
    return parse_flag_document(path, data)


def _flag_file_paths(flags_dir: Path) -> list[Path]:
    """The `*.json` files right in `flags_dir`, sorted; hidden ones (editor leftovers) skipped."""
    return sorted(path for path in flags_dir.glob("*.json") if not path.name.startswith("."))


def read_flag_files(flags_dir: Path) -> dict[str, FlagFileDoc]:
    """Every flag file in `flags_dir`, by file name, sorted.

    Every file is read even when an earlier one fails; if any fails (including a flag key that an
    earlier file already defines), `FlagFilesInvalid` is raised at the end with each bad file's
    error by name and the valid documents, so a caller may go on with those.
    """
    if not flags_dir.is_dir():
        raise FlagFilesInvalid({flags_dir.name: FlagFileError(flags_dir, "no such directory")}, {})
    docs: dict[str, FlagFileDoc] = {}
    errors: dict[str, FlagFileError] = {}
    owners: dict[str, str] = {}
    for path in _flag_file_paths(flags_dir):
        try:
            doc = parse_flag_file(path)
        except FlagFileError as exc:
            errors[path.name] = exc
            continue
        taken = sorted(key for key in doc.flags if key in owners)
        if taken:
            errors[path.name] = FlagFileError(
                path,
                ", ".join(f"flag {key!r} is already defined in {owners[key]}" for key in taken),
            )
            continue
        owners.update(dict.fromkeys(doc.flags, path.name))
        docs[path.name] = doc
    if errors:
        raise FlagFilesInvalid(errors, docs)
    return docs


class _Seen(msgspec.Struct, frozen=True):
    mtime_ns: int
    size: int
    digest: bytes


class FlagFileWatcher:
    """Polls `flags_dir` every `interval_s` and reports each changed, new or removed flag file.

    A file whose content changed is passed to `on_change` as its parsed document (a dict), or as
    the `FlagFileError` that makes it invalid (`FlagFileRemoved` when it is gone). A file is
    reported once per distinct content: touching it, or rewriting the same bytes, reports nothing.
    Files present when `start` is called are the baseline and are not reported, so start the
    watcher *before* the initial `read_flag_files`: an edit in between is then reported (again)
    rather than lost. Neither a malformed file nor a failing callback stops the watcher; a file
    over `MAX_FLAG_FILE_BYTES` is reported as an error without being read.
    """

    def __init__(
        self, flags_dir: Path, on_change: OnFlagFileChange, interval_s: float = 0.25
    ) -> None:
        if interval_s <= 0:
            raise ValueError(f"interval_s must be positive, not {interval_s}")
        self.flags_dir = flags_dir
        self.interval_s = interval_s
        self._on_change = on_change
        self._seen: dict[Path, _Seen] = {}
        self._scan_lock = threading.Lock()
        self._poll_lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    async def start(self) -> None:
        """Record the files present now as the baseline, then poll in a background task."""
        if self.running:
            raise RuntimeError("the flag file watcher is already running")
        await asyncio.to_thread(self._scan)
        self._task = asyncio.create_task(self._run(), name=f"flag-file-watcher:{self.flags_dir}")

    async def stop(self) -> None:
        """Stop polling and wait for the task to end; harmless when not running."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def poll(self) -> None:
        """Scan once now and report what changed since the last scan."""
        async with self._poll_lock:
            changes = await asyncio.to_thread(self._scan)
            for path, value in changes:
                try:
                    await self._on_change(path, value)
                except Exception:
                    _log.exception("flag_file_callback_failed", file=path.name)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            try:
                await self.poll()
            except Exception:
                _log.exception("flag_file_poll_failed", flags_dir=str(self.flags_dir))

    def _scan(self) -> list[tuple[Path, dict[str, Any] | FlagFileError]]:
        with self._scan_lock:
            now_ns = time.time_ns()
            changes: list[tuple[Path, dict[str, Any] | FlagFileError]] = []
            present: set[Path] = set()
            for path in _flag_file_paths(self.flags_dir):
                try:
                    info = path.stat()
                except OSError:
                    continue  # gone between listing and stat: reported as removed below
                if not stat.S_ISREG(info.st_mode):
                    continue
                present.add(path)
                change = self._check(path, info.st_mtime_ns, info.st_size, now_ns)
                if change is not None:
                    changes.append((path, change))
            for path in sorted(set(self._seen) - present):
                del self._seen[path]
                changes.append((path, FlagFileRemoved(path)))
            return changes

    def _check(
        self, path: Path, mtime_ns: int, size: int, now_ns: int
    ) -> dict[str, Any] | FlagFileError | None:
        """The file's new parsed content or error, or None when its content did not change."""
        seen = self._seen.get(path)
        racy = now_ns - mtime_ns < _RACY_NS
        if seen is not None and (seen.mtime_ns, seen.size) == (mtime_ns, size) and not racy:
            return None
        result: dict[str, Any] | FlagFileError
        try:
            if size > MAX_FLAG_FILE_BYTES:
                raise FlagFileError(path, f"larger than {MAX_FLAG_FILE_BYTES} bytes")
            data = _read_bounded(path)
        except OSError as exc:
            data = f"unreadable: {exc}".encode()
            result = FlagFileError(path, f"cannot read: {exc.strerror or exc}")
        except FlagFileError as exc:
            data = f"too large: {size}".encode()
            result = exc
        else:
            try:
                result = parse_flag_document(path, data).raw
            except FlagFileError as exc:
                result = exc
        digest = hashlib.sha256(data).digest()
        self._seen[path] = _Seen(mtime_ns, size, digest)
        if seen is not None and seen.digest == digest:
            return None
        return result
