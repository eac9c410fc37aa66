from __future__ import annotations

import pytest

from sophia_tasks.settings import ConfigError, load_settings


def test_defaults_match_the_contract() -> None:
    s = load_settings({})
    assert s.broker_url == "redis://127.0.0.1:6379/0"
    assert s.redis_url == "redis://127.0.0.1:6379/1"
    assert s.postgres_dsn == "postgresql://postgres@127.0.0.1:5432/sophia"
    assert s.snowflake.emulator and s.snowflake.host == "127.0.0.1" and s.snowflake.port == 8765
    assert s.max_body_bytes == 1024 * 1024 and s.dedupe_window_seconds == 86400 and s.port == 9009


def test_tokens_and_secrets_are_lists() -> None:
    s = load_settings({"SOPHIA_WEBHOOK_TOKENS": " a, b ,,", "SOPHIA_WEBHOOK_SECRET": "whsec_x"})
    assert s.webhook_tokens == ("a", "b") and s.webhook_secrets == ("whsec_x",)


def test_real_snowflake_account_leaves_emulator_mode() -> None:
    s = load_settings({"SOPHIA_SNOWFLAKE_ACCOUNT": "xy12345.eu-west-1", "SOPHIA_SNOWFLAKE_HOST": "127.0.0.1"})
    kwargs = s.snowflake.connect_kwargs()
    assert not s.snowflake.emulator and kwargs["account"] == "xy12345.eu-west-1" and "protocol" not in kwargs


def test_bad_numbers_name_the_variable() -> None:
    with pytest.raises(ConfigError, match="SOPHIA_MAX_BODY_BYTES"):
        load_settings({"SOPHIA_MAX_BODY_BYTES": "lots"})


def test_retry_backoff_must_stay_below_visibility_timeout() -> None:
    with pytest.raises(ConfigError, match="VISIBILITY_TIMEOUT"):
        load_settings({"SOPHIA_RETRY_BACKOFF_MAX": "3000", "SOPHIA_VISIBILITY_TIMEOUT": "3600"})


def test_one_bulk_batch_in_flight_unless_told_otherwise() -> None:
    """Measured on 2 cores: one batch backfilled as fast as two and kept the live lag down."""
    assert load_settings({}).bulk_inflight == 1
    assert load_settings({"SOPHIA_BULK_INFLIGHT": "3"}).bulk_inflight == 3
    assert load_settings({"SOPHIA_BULK_INFLIGHT": "0"}).bulk_inflight == 0
