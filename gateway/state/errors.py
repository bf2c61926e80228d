"""Errors of the state layer. They know nothing of HTTP; the edge maps them to status codes."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from gateway.errors import GatewayError

if TYPE_CHECKING:
    from gateway.state.files import FlagFileDoc


class StoreError(GatewayError):
    """Base of every error a store raises on purpose."""


class VersionConflict(StoreError):
    """A write whose `expected_version` is not the stored one (0 stands for "no such key").

    Nothing was written: neither the flag nor an audit entry.
    """

    def __init__(self, key: str, expected: int, actual: int) -> None:
        if expected == 0:
            detail = f"expected it not to exist, but it is at version {actual}"
        elif actual == 0:
            detail = f"expected version {expected}, but it does not exist"
        else:
            detail = f"expected version {expected}, but it is at version {actual}"
        super().__init__(f"flag {key!r}: {detail}")
        self.key = key
        self.expected = expected
        self.actual = actual


class StoreUnavailable(StoreError):
    """The store cannot answer now: closed, locked past its busy timeout, or an I/O failure."""


class FlagFileError(GatewayError):
    """A flag file that cannot be read or is not a valid flagd document."""

    def __init__(self, path: Path, detail: str) -> None:
        super().__init__(f"{path.name}: {detail}")
        self.path = path
        self.detail = detail


class FlagFileRemoved(FlagFileError):
    """A flag file that was there and is gone (deleted or renamed away)."""

    def __init__(self, path: Path) -> None:
        super().__init__(path, "file was removed")


class FlagFilesInvalid(GatewayError):
    """Some files of a flags directory are invalid. Every file was read; none is skipped silently.

    `errors` maps each bad file's name to its error; `docs` holds the files that were valid.
    """

    def __init__(
        self, errors: Mapping[str, FlagFileError], docs: Mapping[str, FlagFileDoc]
    ) -> None:
        listing = "; ".join(str(error) for error in errors.values())
        super().__init__(f"{len(errors)} invalid flag file(s): {listing}")
        self.errors = dict(errors)
        self.docs = dict(docs)
