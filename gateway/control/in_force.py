"""A flag as this process applies it."""

from __future__ import annotations

from dataclasses import dataclass

from gateway.flags.document import Release
from gateway.state import FlagRecord


@dataclass(frozen=True, slots=True)
class InForce:
    """A flag as stored, and the release it describes, as this process applies it."""

    record: FlagRecord
    release: Release
