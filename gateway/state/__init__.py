"""State: flag records, the append-only audit log and shadow comparisons behind one `Store`.

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
from gateway.state.shared import (
    ArmTally,
    Claim,
    EvidenceTally,
    ShadowLabels,
    StoredPrediction,
    WindowTally,
)
from gateway.state.sqlite import SQLiteStore
from gateway.state.store import (
    AuditEntry,
    ComparisonOutcome,
    ComparisonRecord,
    DiffFn,
    FlagRecord,
    OutputRecord,
    Store,
    TensorData,
    whole_value_diff,
)

__all__ = [
    "ArmTally",
    "AuditEntry",
    "Claim",
    "ComparisonOutcome",
    "ComparisonRecord",
    "DiffFn",
    "EvidenceTally",
    "FlagFileDoc",
    "FlagFileError",
    "FlagFileRemoved",
    "FlagFileWatcher",
    "FlagFilesInvalid",
    "FlagRecord",
    "OnFlagFileChange",
    "OutputRecord",
    "SQLiteStore",
    "ShadowLabels",
    "Store",
    "StoreError",
    "StoreUnavailable",
    "StoredPrediction",
    "TensorData",
    "VersionConflict",
    "WindowTally",
    "parse_flag_document",
    "parse_flag_file",
    "read_flag_files",
    "whole_value_diff",
]
