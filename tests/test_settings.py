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


@pytest.mark.parametrize(
    ("store", "kind"),
    [
        ("", "sqlite"),
        ("sqlite", "sqlite"),
        ("redis://redis:6379/0", "redis"),
        ("rediss://h/2", "redis"),
    ],
)
def test_store_names_the_embedded_file_or_a_redis(store: str, kind: str) -> None:
    """GATEWAY_STORE empty or "sqlite" is the embedded file; a redis:// (or rediss://) URL is
    Redis, whose processes share their state (pooled guard, feedback joined through it)."""
    settings = Settings.from_mapping({"GATEWAY_STORE": store})
    assert settings.store_kind == kind
    assert settings.shared_state is (kind == "redis")
    assert settings.redis_prefix == "gateway"


@pytest.mark.parametrize(
    ("values", "words"),
    [
        ({"GATEWAY_STORE": "postgres://db/0"}, "GATEWAY_STORE.*neither empty nor 'sqlite'"),
        ({"GATEWAY_STORE": "redis:///0"}, "GATEWAY_STORE.*names no host"),
        ({"GATEWAY_STORE": "redis://h:99999/0"}, "GATEWAY_STORE.*invalid port"),
        ({"GATEWAY_STORE": "redis://h/zero"}, "GATEWAY_STORE.*database must be a number"),
        ({"GATEWAY_REDIS_PREFIX": ""}, "GATEWAY_REDIS_PREFIX must not be empty"),
        ({"GATEWAY_REDIS_PREFIX": "a{b}"}, "GATEWAY_REDIS_PREFIX.*hash tags"),
    ],
)
def test_a_store_that_is_not_one_is_refused(values: dict[str, str], words: str) -> None:
    """An unknown store, a Redis URL without a host or with a bad port or database, or a key
    prefix that is empty or holds braces is refused with a ValueError naming the setting."""
    with pytest.raises(ValueError, match=words):
        Settings.from_mapping(values)


def test_a_redis_password_stays_out_of_the_error() -> None:
    """A refused Redis URL is quoted without its password."""
    with pytest.raises(ValueError, match=r"\*\*\*@h") as caught:
        Settings.from_mapping({"GATEWAY_STORE": "redis://user:s3cret@h/zero"})
    assert "s3cret" not in str(caught.value)
