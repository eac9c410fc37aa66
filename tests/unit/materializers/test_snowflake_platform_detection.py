"""The connector's cloud platform probe is off unless asked for, and an operator's own switch wins."""
from __future__ import annotations

import pytest

from sophia_tasks.materializers.snowflake import PLATFORM_DETECTION_ENV, _skip_platform_detection
from sophia_tasks.settings import load_settings


def test_the_probe_is_off_by_default_and_the_connector_reads_it_so(monkeypatch: pytest.MonkeyPatch) -> None:
    from snowflake.connector.platform_detection import detect_platforms

    monkeypatch.delenv(PLATFORM_DETECTION_ENV, raising=False)
    _skip_platform_detection(load_settings({}).snowflake.platform_detection)
    assert detect_platforms(platform_detection_timeout_seconds=0.2) == ["disabled"]


def test_asked_for_it_is_left_on(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    monkeypatch.delenv(PLATFORM_DETECTION_ENV, raising=False)
    settings = load_settings({"SOPHIA_SNOWFLAKE_PLATFORM_DETECTION": "true"})
    assert settings.snowflake.platform_detection is True
    _skip_platform_detection(settings.snowflake.platform_detection)
    assert PLATFORM_DETECTION_ENV not in os.environ


def test_an_operators_own_switch_is_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    monkeypatch.setenv(PLATFORM_DETECTION_ENV, "false")
    _skip_platform_detection(False)
    assert os.environ[PLATFORM_DETECTION_ENV] == "false"
