from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from sophia_tasks import logs
from sophia_tasks.logs import CONTEXT_FIELDS, celery_setup_logging, configure_logging, log_context


@pytest.fixture(autouse=True)
def restore_logging(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """configure_logging changes process-global state: put the root logger (and the quietened loggers) back."""
    monkeypatch.delenv("SOPHIA_LOG_LEVEL", raising=False)
    monkeypatch.delenv("SOPHIA_LOG_FORMAT", raising=False)
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    noisy = {name: logging.getLogger(name).level for name in logs.NOISY_LOGGERS}
    yield
    for handler in root.handlers[:]:
        if handler not in handlers:
            root.removeHandler(handler)
            handler.close()
    root.handlers[:] = handlers
    root.setLevel(level)
    for name, lvl in noisy.items():
        logging.getLogger(name).setLevel(lvl)


def _ours() -> list[logging.Handler]:
    return [h for h in logging.getLogger().handlers if getattr(h, logs._MARKER, False)]


def _lines(stream: io.StringIO) -> list[str]:
    return stream.getvalue().splitlines()


def test_text_line_has_level_logger_message_and_context() -> None:
    out = io.StringIO()
    configure_logging("INFO", "text", stream=out)
    with log_context(stage="validate", events=3):
        logging.getLogger("sophia_tasks.pipeline").info("validated %d events", 3)
    [line] = _lines(out)
    assert " INFO sophia_tasks.pipeline: validated 3 events" in line
    assert line.endswith(" stage=validate events=3")


def test_json_line_parses_and_has_fields() -> None:
    out = io.StringIO()
    configure_logging("INFO", "json", stream=out)
    with log_context(stage="validate", events=3):
        logging.getLogger("sophia_tasks.pipeline").info("validated", extra={"not_a_context_field": 1})
    [line] = _lines(out)
    data = json.loads(line)
    assert data["level"] == "INFO" and data["logger"] == "sophia_tasks.pipeline" and data["message"] == "validated"
    assert data["stage"] == "validate" and data["events"] == 3 and data["timestamp"]
    assert set(data) == {"timestamp", "level", "logger", "message", "stage", "events"}


def test_json_formats_exc_info() -> None:
    out = io.StringIO()
    configure_logging("INFO", "json", stream=out)
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        logging.getLogger("sophia_tasks.worker").exception("task failed", extra={"task_id": "t-1"})
    [line] = _lines(out)
    data = json.loads(line)
    assert data["message"] == "task failed" and data["task_id"] == "t-1"
    assert "RuntimeError: boom" in data["exc_info"] and "Traceback" in data["exc_info"]


def test_text_context_stays_on_first_line_before_traceback() -> None:
    out = io.StringIO()
    configure_logging("INFO", "text", stream=out)
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        with log_context(target="snowflake"):
            logging.getLogger("sophia_tasks.materializers").exception("write failed")
    lines = _lines(out)
    assert lines[0].endswith("write failed target=snowflake") and lines[-1] == "RuntimeError: boom"


def test_event_id_via_extra_and_extra_beats_context() -> None:
    out = io.StringIO()
    configure_logging("INFO", "text", stream=out)
    log = logging.getLogger("sophia_tasks.ingest")
    log.info("accepted", extra={"event_id": "evt_1"})
    with log_context(stage="validate", events=2):
        log.warning("rejected", extra={"event_id": "evt 2", "stage": "schema"})
    first, second = _lines(out)
    assert first.endswith("accepted event_id=evt_1")
    assert second.endswith('rejected stage=schema events=2 event_id="evt 2"')


def test_nesting_restores_outer_context() -> None:
    out = io.StringIO()
    configure_logging("INFO", "text", stream=out)
    log = logging.getLogger("sophia_tasks.pipeline")
    with log_context(stage="validate", events=3):
        with log_context(stage="enrich", event_id="evt_1"):
            log.info("inner")
        log.info("outer")
    log.info("none")
    inner, outer, none = _lines(out)
    assert inner.endswith("inner stage=enrich events=3 event_id=evt_1")
    assert outer.endswith("outer stage=validate events=3")
    assert none.endswith("none")


def test_context_restored_after_exception_and_unknown_keys_rejected() -> None:
    with pytest.raises(KeyError):
        with log_context(stage="validate"):
            raise KeyError("x")
    assert dict(logs._context.get()) == {}
    with pytest.raises(ValueError, match="stage"):
        with log_context(stgae="validate"):
            pass
    assert set(CONTEXT_FIELDS) == {"stage", "events", "event_id", "target", "collection", "task_id"}


def test_idempotent_one_handler_after_two_calls() -> None:
    first, second = io.StringIO(), io.StringIO()
    configure_logging("INFO", "text", stream=first)
    configure_logging("INFO", "text", stream=second)
    assert len(_ours()) == 1
    logging.getLogger("web.app").info("once")
    assert first.getvalue() == "" and len(_lines(second)) == 1


def test_env_vars_respected_and_arguments_win(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOPHIA_LOG_LEVEL", "warning")
    monkeypatch.setenv("SOPHIA_LOG_FORMAT", "json")
    out = io.StringIO()
    configure_logging(stream=out)
    log = logging.getLogger("sophia_tasks.cli")
    log.info("dropped")
    log.warning("kept")
    [line] = _lines(out)
    assert json.loads(line)["message"] == "kept"

    out = io.StringIO()
    configure_logging("INFO", "text", stream=out)
    log.info("text now")
    assert _lines(out)[0].endswith("INFO sophia_tasks.cli: text now")


def test_bad_format_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    before = _ours()  # an app or command built by an earlier test may have installed ours already
    with pytest.raises(ValueError, match="text, json"):
        configure_logging(fmt="xml", stream=io.StringIO())
    monkeypatch.setenv("SOPHIA_LOG_FORMAT", "logfmt")
    with pytest.raises(ValueError, match="'logfmt'"):
        configure_logging(stream=io.StringIO())
    with pytest.raises(ValueError, match="log level"):
        configure_logging(level="LOUD", fmt="text", stream=io.StringIO())
    assert _ours() == before


def test_level_info_filters_debug_and_default_is_info() -> None:
    out = io.StringIO()
    configure_logging(stream=out)  # no argument, no env: INFO
    log = logging.getLogger("web.views")
    log.debug("hidden")
    log.info("shown")
    assert [line.rsplit(": ", 1)[1] for line in _lines(out)] == ["shown"]
    assert logging.getLogger().level == logging.INFO


def test_quiet_third_party_loggers() -> None:
    configure_logging("DEBUG", "text", stream=io.StringIO())
    for name in ("snowflake.connector", "snowflake.connector.vendored.urllib3"):
        assert logging.getLogger(name).level == logging.ERROR


def test_celery_setup_logging_uses_celery_loglevel() -> None:
    # Celery sends loglevel already converted to an int (celery.app.log.setup_logging_subsystem).
    celery_setup_logging(loglevel=logging.WARNING, logfile=None, format="%(message)s", colorize=False)
    assert len(_ours()) == 1 and logging.getLogger().level == logging.WARNING
    celery_setup_logging(loglevel="debug")
    assert len(_ours()) == 1 and logging.getLogger().level == logging.DEBUG
