"""The broker's TLS options come from the URL, and the certificate is verified unless it says not to."""
from __future__ import annotations

import ssl

from sophia_tasks.messaging.config import redis_tls_options


def test_rediss_requires_the_certificate_and_takes_the_ca_from_the_url() -> None:
    assert redis_tls_options("redis://127.0.0.1:6379/0") is None
    assert redis_tls_options("rediss://h:6380/0") == {"ssl_cert_reqs": ssl.CERT_REQUIRED}
    opts = redis_tls_options("rediss://h:6380/0?ssl_ca_certs=/etc/ca.pem&ssl_certfile=/c.pem&ssl_keyfile=/k.pem")
    assert opts == {"ssl_cert_reqs": ssl.CERT_REQUIRED, "ssl_ca_certs": "/etc/ca.pem", "ssl_certfile": "/c.pem",
                    "ssl_keyfile": "/k.pem"}
    assert redis_tls_options("rediss://h:6380/0?ssl_cert_reqs=none") == {"ssl_cert_reqs": ssl.CERT_NONE}


def test_amqps_options_go_to_py_amqp_under_its_names_and_leave_the_url() -> None:
    from sophia_tasks.messaging.config import broker_connection

    url, tls = broker_connection("amqps://u:p@mq:5671/vh?ssl_ca_certs=/ca.pem&ssl_certfile=/c.pem&ssl_keyfile=/k.pem"
                                 "&heartbeat=30")
    assert url == "amqps://u:p@mq:5671/vh?heartbeat=30"  # py-amqp refuses ssl_* keyword arguments
    assert tls == {"cert_reqs": ssl.CERT_REQUIRED, "ca_certs": "/ca.pem", "certfile": "/c.pem", "keyfile": "/k.pem"}
    assert broker_connection("amqp://guest:guest@127.0.0.1:5672//") == ("amqp://guest:guest@127.0.0.1:5672//", None)
    assert broker_connection("rediss://h:6380/0")[1] == {"ssl_cert_reqs": ssl.CERT_REQUIRED}


def test_sender_for_uses_the_current_app_only_when_it_publishes_where_the_settings_say() -> None:
    """A process that built the worker's app from its environment, then handed other settings (a test
    harness, an operator's command with another broker), publishes those settings' messages to their
    broker: the reconcile test's batch once went to the default broker this way."""
    from celery import Celery

    from sophia_tasks.flows import load_spec
    from sophia_tasks.messaging.config import configure, sender_for
    from sophia_tasks.settings import load_settings

    default = load_settings({"SOPHIA_BROKER_URL": "redis://127.0.0.1:6379/0"})
    spec = load_spec(default.flow_path)
    app = Celery("bound-elsewhere", set_as_current=False)
    configure(app, default, spec)
    app.set_current()
    try:
        def underlying(sender: Celery) -> Celery:  # current_app is a proxy
            return getattr(sender, "_get_current_object", lambda: sender)()

        assert underlying(sender_for(default, spec)) is app  # a worker's own settings: its own app
        other = load_settings({"SOPHIA_BROKER_URL": "redis://127.0.0.1:6379/12"})
        sender = underlying(sender_for(other, spec))
        assert sender is not app and sender.conf.broker_url.endswith("/12")
        prefixed = load_settings({"SOPHIA_BROKER_URL": "redis://127.0.0.1:6379/0", "SOPHIA_QUEUE_PREFIX": "t."})
        assert underlying(sender_for(prefixed, spec)) is not app
    finally:
        Celery("default-again", set_as_current=False).set_current()
