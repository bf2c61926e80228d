"""Metrics and logs: one metrics object with its own registry, structlog configured once."""
