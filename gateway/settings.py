"""Settings, read from an injected mapping (the environment, or a test's dict), never at import."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import msgspec

from gateway.dataplane.dataplane import Limits
from gateway.observability.logging import LogFormat

PREFIX = "GATEWAY_"


def _decode_extra(kind: type, value: Any) -> Any:
    if kind is Path and isinstance(value, str):
        return Path(value)
    raise NotImplementedError(f"cannot read {kind.__name__} from {type(value).__name__}")


class Settings(msgspec.Struct, frozen=True, kw_only=True):
    """Everything `create_app` needs. Each field reads from `GATEWAY_<FIELD>` in a mapping."""

    models_dir: Path = Path("models")
    flags_dir: Path = Path("flags")
    # The embedded store: one SQLite file, shared by the worker processes of one machine.
    state_path: Path = Path("var/state.db")
    # Admin tokens as `name:role:token` entries (comma separated) and/or a JSON file of them.
    admin_tokens: str = ""
    admin_tokens_file: Path | None = None
    # How often a worker checks the store for flag changes made by another worker.
    flag_poll_interval_s: float = 0.5
    host: str = "127.0.0.1"
    port: int = 8000
    workers: int = 1
    log_format: LogFormat = "auto"
    log_level: str = "info"
    # Share of successful requests that get an access-log line; errors are always logged.
    access_log_sample: float = 1.0
    max_body_bytes: int = 4 * 1024 * 1024
    max_batch_rows: int = 1024
    intra_op_threads: int = 1

    @classmethod
    def from_mapping(cls, values: Mapping[str, str], **overrides: Any) -> Settings:
        """Build from `GATEWAY_*` keys (strings, as in the environment), then explicit overrides."""
        raw: dict[str, Any] = {}
        for field in msgspec.structs.fields(cls):
            key = PREFIX + field.name.upper()
            if key in values:
                raw[field.name] = values[key]
        raw.update({k: v for k, v in overrides.items() if v is not None})
        try:
            return msgspec.convert(raw, cls, strict=False, dec_hook=_decode_extra)
        except msgspec.ValidationError as exc:
            raise ValueError(f"invalid setting: {exc}") from exc

    def __post_init__(self) -> None:
        if not 0.0 <= self.access_log_sample <= 1.0:
            raise msgspec.ValidationError("access_log_sample must be between 0 and 1")
        if self.max_body_bytes < 1024 or self.max_batch_rows < 1 or self.workers < 1:
            raise msgspec.ValidationError("limits and workers must be positive")

    @property
    def limits(self) -> Limits:
        return Limits(max_body_bytes=self.max_body_bytes, max_batch_rows=self.max_batch_rows)
