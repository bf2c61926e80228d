"""Settings, read from an injected mapping (the environment, or a test's dict), never at import."""

from __future__ import annotations

import urllib.parse
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec

from gateway.dataplane.dataplane import Limits
from gateway.execution.config import ExecutionConfig, execution_problem
from gateway.observability.logging import LogFormat
from gateway.shadow.policy import MAX_INPUT_BYTES, ShadowConfig, ShadowPolicy
from gateway.state.redis_keys import prefix_problem, redacted

PREFIX = "GATEWAY_"
# Each execution key's gateway-wide default, by the setting that holds it.
_EXECUTION_SETTINGS = {
    "instances": "execution_instances",
    "max_batch_size": "execution_max_batch_size",
    "max_queue_delay_ms": "execution_max_queue_delay_ms",
    "timeout_ms": "inference_timeout_ms",
    "max_queue": "execution_max_queue",
    "max_shadow_queue": "execution_max_shadow_queue",
}


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
    # Where the state lives: "" or "sqlite" is the embedded file at state_path (one machine);
    # redis://host:port/db (rediss:// for TLS) a Redis that several replicas share, its keys
    # under redis_prefix (so that several gateways can share one Redis).
    store: str = ""
    redis_prefix: str = "gateway"
    # True when `store` names a node of a Redis Cluster (the client finds the others).
    redis_cluster: bool = False
    # Admin tokens as `name:role:token` entries (comma separated) and/or a JSON file of them.
    admin_tokens: str = ""
    admin_tokens_file: Path | None = None
    # How often a worker checks the store for flag changes made by another worker.
    flag_poll_interval_s: float = 0.5
    # Where worker processes leave their metrics for a scrape to add up (set by
    # `gateway serve --workers N`, which empties it first).
    metrics_dir: Path | None = None
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
    # How every version executes unless its manifest's `execution` object says otherwise
    # (gateway/execution/config.py): its deadline, instance threads, dynamic batching, queues.
    inference_timeout_ms: float = 1000.0
    execution_instances: int = 1
    execution_max_batch_size: int = 32
    execution_max_queue_delay_ms: float = 2.0
    execution_max_queue: int = 256
    execution_max_shadow_queue: int = 512
    # The guard: how often it judges each release, where it posts rollbacks and ramp steps,
    # and how long served predictions wait for their ground truth (feedback).
    guard_interval_s: float = 1.0
    guard_webhook_url: str = ""
    guard_webhook_timeout_s: float = 5.0
    feedback_ttl_s: float = 24 * 3600.0
    feedback_max_entries: int = 100_000
    # Serve V2 infer from a thin ASGI layer in front of Litestar's handler pipeline (same
    # answers, about 40 µs less per request); false sends it through the Litestar handlers.
    inference_fast_path: bool = True
    # Freeze the start-up heap out of the garbage collector's full collections (gc.freeze).
    gc_freeze: bool = True
    # Tracked allocations between two young-generation collections (Python's default: 700).
    # Serving allocates fast (and shadow mode faster): at 700 the collector ran hundreds of
    # times a second and its full collections stalled the event loop for tens of ms; 0 keeps
    # Python's default.
    gc_gen0_threshold: int = 20_000
    # How long a thread may hold the GIL while another waits for it (Python's default: 5 ms;
    # 0 keeps it). Each executor call hands its answers back through the GIL, so this bounds
    # what the hand-off adds to a request when the event loop is busy.
    switch_interval_ms: float = 1.0
    # Shadow mode: each release's defaults, which its flag's `shadow.*` metadata overrides.
    # Shadows run on their version's executor (execution_max_shadow_queue bounds its queue).
    shadow_timeout_ms: float = 500.0
    # CPU time all shadow runs together may use, as a share of one core (gateway/execution/
    # budget.py); past it new shadow runs are dropped and counted (reason cpu_budget).
    shadow_cpu_share: Annotated[float, msgspec.Meta(gt=0, le=64)] = 0.05
    # Primary requests in flight in this worker above which no new shadow run starts: the
    # primaries have no spare capacity then (dropped and counted, reason primary_busy; 0: off).
    shadow_max_primaries_in_flight: Annotated[int, msgspec.Meta(ge=0)] = 16
    shadow_keep_inputs: bool = False
    shadow_max_input_bytes: int = 16 * 1024
    # Output elements a comparison record keeps per side (beyond: shapes and top classes),
    # and whether agreeing comparisons keep their tensors too (else only their summary).
    shadow_max_output_values: int = 1024
    shadow_keep_agreeing_outputs: bool = False
    # Records waiting in memory for the store (more are dropped and counted), and how often
    # they are written in one batch.
    shadow_buffer_records: int = 10_000
    shadow_flush_interval_s: float = 1.0
    # Retention of comparison records: by age and by count.
    shadow_retention_s: float = 7 * 86400.0
    shadow_max_records: int = 100_000
    shadow_drop_log_interval_s: float = 10.0
    # The dashboard (`/ui`): how long a login lasts, how often its charts' history samples
    # the live figures (also how often its pages refresh), and how much history it keeps.
    ui_session_ttl_s: float = 8 * 3600.0
    ui_sample_interval_s: float = 5.0
    ui_history_s: float = 3600.0

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
        if self.gc_gen0_threshold < 0:
            raise msgspec.ValidationError("gc_gen0_threshold must not be negative")
        if not 0 <= self.switch_interval_ms <= 100:
            raise msgspec.ValidationError("switch_interval_ms must be between 0 and 100")
        if (
            self.shadow_buffer_records < 1
            or self.shadow_max_records < 1
            or self.shadow_max_output_values < 0
        ):
            raise msgspec.ValidationError("shadow record counts must be positive")
        for key, name in _EXECUTION_SETTINGS.items():
            problem = execution_problem(key, getattr(self, name))
            if problem is not None:
                raise msgspec.ValidationError(f"{PREFIX}{name.upper()}: {problem}")
        if not 0 <= self.shadow_max_input_bytes <= MAX_INPUT_BYTES:
            raise msgspec.ValidationError(
                f"shadow_max_input_bytes must be between 0 and {MAX_INPUT_BYTES}"
            )
        if (
            self.shadow_timeout_ms <= 0
            or self.shadow_flush_interval_s <= 0
            or self.shadow_retention_s <= 0
            or self.shadow_drop_log_interval_s <= 0
        ):
            raise msgspec.ValidationError(
                "shadow timeout, intervals and retention must be positive"
            )

        problem = _store_problem(self.store)
        if problem is not None:
            raise msgspec.ValidationError(f"{PREFIX}STORE: {problem}")
        problem = prefix_problem(self.redis_prefix)
        if problem is not None:
            raise msgspec.ValidationError(f"{PREFIX}REDIS_PREFIX {problem}")
        if self.ui_session_ttl_s <= 0 or self.ui_sample_interval_s <= 0 or self.ui_history_s <= 0:
            raise msgspec.ValidationError(
                "ui_session_ttl_s, ui_sample_interval_s and ui_history_s must be positive"
            )

    @property
    def limits(self) -> Limits:
        return Limits(max_body_bytes=self.max_body_bytes, max_batch_rows=self.max_batch_rows)

    @property
    def shared_state(self) -> bool:
        """Whether this process is one of several serving the same releases (worker
        processes, or replicas sharing a Redis store): then the guard pools every process's
        figures and feedback joins predictions through the store."""
        return self.workers > 1 or self.store_kind == "redis"

    @property
    def store_kind(self) -> Literal["sqlite", "redis"]:
        """Which store `store` names (validated when the settings were made)."""
        return "sqlite" if self.store in ("", "sqlite") else "redis"

    @property
    def execution(self) -> ExecutionConfig:
        """The execution defaults every version's manifest may override."""
        return ExecutionConfig(
            **{key: getattr(self, name) for key, name in _EXECUTION_SETTINGS.items()}
        )

    @property
    def shadow(self) -> ShadowConfig:
        return ShadowConfig(
            defaults=ShadowPolicy(
                timeout_s=self.shadow_timeout_ms / 1000.0,
                keep_inputs=self.shadow_keep_inputs,
                max_input_bytes=self.shadow_max_input_bytes,
            ),
            max_output_values=self.shadow_max_output_values,
            keep_agreeing_outputs=self.shadow_keep_agreeing_outputs,
            max_primaries_in_flight=self.shadow_max_primaries_in_flight,
            buffer_records=self.shadow_buffer_records,
            flush_interval_s=self.shadow_flush_interval_s,
            retention_s=self.shadow_retention_s,
            max_records=self.shadow_max_records,
            drop_log_interval_s=self.shadow_drop_log_interval_s,
        )


def _store_problem(store: str) -> str | None:
    """Why `store` names no store (None when it does)."""
    if store in ("", "sqlite"):
        return None
    url = urllib.parse.urlsplit(store)
    store = redacted(store)
    if url.scheme not in ("redis", "rediss"):
        return (
            f"{store!r} is neither empty nor 'sqlite' (the embedded file at state_path) nor a "
            "Redis URL (redis://host:port/db)"
        )
    try:
        port = url.port
    except ValueError:
        return f"{store!r} has an invalid port"
    if not url.hostname:
        return f"{store!r} names no host (redis://host:port/db)"
    database = url.path.strip("/")
    if database and not database.isdigit():
        return f"{store!r}: the database must be a number (redis://host:{port or 6379}/0)"
    return None
