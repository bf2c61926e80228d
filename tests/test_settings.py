"""Settings come from an injected mapping, with clear errors for bad values."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.settings import Settings


def test_reads_prefixed_keys_from_the_mapping() -> None:
    """GATEWAY_* keys are parsed into typed fields; other keys are ignored."""
    settings = Settings.from_mapping(
        {
            "GATEWAY_PORT": "9001",
            "GATEWAY_MODELS_DIR": "/srv/models",
            "PORT": "1",
            "GATEWAY_WORKERS": "2",
        }
    )
    assert settings.port == 9001
    assert settings.models_dir == Path("/srv/models")
    assert settings.workers == 2


def test_overrides_win_over_the_mapping() -> None:
    """Explicit overrides (CLI flags) beat the environment; None overrides are ignored."""
    settings = Settings.from_mapping({"GATEWAY_PORT": "9001"}, port=9002, host=None)
    assert settings.port == 9002
    assert settings.host == "127.0.0.1"


@pytest.mark.parametrize(
    ("values", "words"),
    [
        ({"GATEWAY_PORT": "eighty"}, "port"),
        ({"GATEWAY_ACCESS_LOG_SAMPLE": "3"}, "access_log_sample"),
        ({"GATEWAY_LOG_FORMAT": "xml"}, "log_format"),
        ({"GATEWAY_MAX_BATCH_ROWS": "0"}, "positive"),
    ],
)
def test_invalid_values_are_named(values: dict[str, str], words: str) -> None:
    """An invalid setting raises ValueError naming the setting."""
    with pytest.raises(ValueError, match=words):
        Settings.from_mapping(values)
