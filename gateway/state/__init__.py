"""State: flag records and the append-only audit log behind one `Store` protocol.

`store` holds the records and the protocol, `sqlite` the embedded implementation, `files` the
flags directory as a source (read once, then watched), `errors` the domain errors.
"""

from gateway.state.errors import (
    FlagFileError,
    FlagFileRemoved,
    FlagFilesInvalid,
    StoreError,
    StoreUnavailable,
    VersionConflict,
)
from gateway.state.files import (
    FlagFileDoc,
    FlagFileWatcher,
    OnFlagFileChange,
    parse_flag_document,
    parse_flag_file,
    read_flag_files,
)
from gateway.state.sqlite import SQLiteStore
from gateway.state.store import AuditEntry, DiffFn, FlagRecord, Store, whole_value_diff

__all__ = [
    "AuditEntry",
    "DiffFn",
    "FlagFileDoc",
    "FlagFileError",
    "FlagFileRemoved",
    "FlagFileWatcher",
    "FlagFilesInvalid",
    "FlagRecord",
    "OnFlagFileChange",
    "SQLiteStore",
    "Store",
    "StoreError",
    "StoreUnavailable",
    "VersionConflict",
    "parse_flag_document",
    "parse_flag_file",
    "read_flag_files",
    "whole_value_diff",
]
