"""The Procfile's web server settings (web/serve.py): what granian is told, from the environment."""
from __future__ import annotations

import pytest

from web.serve import ACCESS_LOG_FORMAT, config_from


@pytest.mark.parametrize("value, host", [
    (None, "127.0.0.1"), ("", "127.0.0.1"), ("0", "127.0.0.1"), ("no", "127.0.0.1"), ("false", "127.0.0.1"),
    ("1", "0.0.0.0"), ("true", "0.0.0.0"), ("YES", "0.0.0.0"),
])
def test_binds_loopback_unless_bind_all(value: str | None, host: str) -> None:
    env = {"PORT": "9123"} if value is None else {"PORT": "9123", "SOPHIA_BIND_ALL": value}
    kwargs = config_from(env).granian_kwargs()
    assert (kwargs["address"], kwargs["port"]) == (host, 9123)


def test_defaults_match_the_gunicorn_config() -> None:
    kwargs = config_from({}).granian_kwargs()
    assert kwargs["port"] == 9009
    assert kwargs["workers"] == 2 and kwargs["blocking_threads"] == 4
    assert kwargs["interface"] == "wsgi" and kwargs["factory"] is True
    assert kwargs["workers_kill_timeout"] == 20  # gunicorn's graceful_timeout
    assert kwargs["log_access"] is False and "log_dictconfig" not in kwargs
    assert "ssl_cert" not in kwargs


def test_sizes_threads_grace_and_access_log_from_the_environment() -> None:
    kwargs = config_from({"WEB_CONCURRENCY": "3", "WEB_THREADS": "8", "SOPHIA_WEB_GRACEFUL_SECONDS": "5",
                          "SOPHIA_ACCESS_LOG": "-"}).granian_kwargs()
    assert (kwargs["workers"], kwargs["blocking_threads"], kwargs["workers_kill_timeout"]) == (3, 8, 5)
    assert kwargs["log_access"] is True
    # The access log names the path and status, never a header (a credential travels in one).
    assert kwargs["log_access_format"] == ACCESS_LOG_FORMAT
    assert "%(headers" not in ACCESS_LOG_FORMAT and "query" not in ACCESS_LOG_FORMAT


@pytest.mark.parametrize("env, message", [
    ({"WEB_THREADS": "0"}, "WEB_THREADS=0 must be at least 1"),
    ({"WEB_CONCURRENCY": "two"}, "WEB_CONCURRENCY='two' is not a whole number"),
    ({"SOPHIA_WEB_TLS_CERT": "/etc/cert.pem"}, "set both SOPHIA_WEB_TLS_CERT and SOPHIA_WEB_TLS_KEY"),
])
def test_a_bad_setting_stops_the_start_with_its_name(env: dict[str, str], message: str) -> None:
    with pytest.raises(SystemExit, match=message):
        config_from(env)


def test_an_access_log_file_gets_its_own_handler() -> None:
    kwargs = config_from({"SOPHIA_ACCESS_LOG": "/var/log/sophia/access.log"}).granian_kwargs()
    handler = kwargs["log_dictconfig"]["handlers"]["access"]
    assert handler["class"] == "logging.FileHandler" and handler["filename"] == "/var/log/sophia/access.log"
    # granian replaces whole sections of its logging config: the server's own logger must still be there.
    assert "_granian" in kwargs["log_dictconfig"]["loggers"]


def test_tls_when_both_files_are_named() -> None:
    kwargs = config_from({"SOPHIA_WEB_TLS_CERT": "/etc/c.pem", "SOPHIA_WEB_TLS_KEY": "/etc/k.pem"}).granian_kwargs()
    assert (str(kwargs["ssl_cert"]), str(kwargs["ssl_key"])) == ("/etc/c.pem", "/etc/k.pem")
