"""The per-request log line: cheap, and sampled by configuration (errors are logged elsewhere)."""

from __future__ import annotations

import random

import structlog


class AccessLog:
    """Logs a sampled share of successful requests as `request_served` events."""

    def __init__(self, sample_rate: float, rng: random.Random | None = None) -> None:
        self._sample_rate = sample_rate
        self._random = (rng or random.Random()).random  # noqa: S311 - sampling, not secrets
        self._log = structlog.get_logger("gateway.access")

    def served(
        self,
        *,
        request_id: str,
        model: str,
        version: str,
        latency_s: float,
        variant: str = "",
        reason: str = "",
    ) -> None:
        if self._sample_rate <= 0.0 or (
            self._sample_rate < 1.0 and self._random() >= self._sample_rate
        ):
            return
        self._log.info(
            "request_served",
            request_id=request_id,
            model=model,
            version=version,
            variant=variant,
            reason=reason,
            latency_ms=round(latency_s * 1000, 3),
        )
