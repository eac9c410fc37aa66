"""When the broker and the cache are one Redis server, the webhook accepts in one round trip."""
from web.services import same_server


def test_two_databases_of_one_server() -> None:
    assert same_server("redis://127.0.0.1:6379/11", "redis://127.0.0.1:6379/10") == (11, 10)
    assert same_server("redis://127.0.0.1:6379", "redis://127.0.0.1:6379/3") == (0, 3)
    assert same_server("unix:///run/redis.sock?db=2", "unix:///run/redis.sock?db=4") == (2, 4)
    # Over TLS too: the one script selects each database on the same connection.
    assert same_server("rediss://127.0.0.1:6380/1?ssl_ca_certs=/ca.pem", "rediss://127.0.0.1:6380/2") == (1, 2)


def test_other_servers_logins_or_brokers_are_not_one_server() -> None:
    assert same_server("redis://127.0.0.1:6379/1", "redis://127.0.0.1:6380/1") is None
    assert same_server("redis://10.0.0.1:6379/1", "redis://10.0.0.2:6379/1") is None
    assert same_server("redis://:a@127.0.0.1:6379/1", "redis://:b@127.0.0.1:6379/2") is None
    assert same_server("redis://u1:p@127.0.0.1:6379/1", "redis://u2:p@127.0.0.1:6379/2") is None
    assert same_server("redis://127.0.0.1:6379/1", "amqp://guest:guest@127.0.0.1:5672//") is None
    assert same_server("rediss://127.0.0.1:6379/1", "redis://127.0.0.1:6379/2") is None  # TLS and plain
