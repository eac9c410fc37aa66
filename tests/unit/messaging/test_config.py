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
