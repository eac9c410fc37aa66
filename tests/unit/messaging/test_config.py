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
