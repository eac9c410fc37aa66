"""The connector's request bodies are gzipped at level 1 (level 0 to a local emulator), and stay valid
gzip of the same bytes."""
from __future__ import annotations

import gzip

from sophia_tasks.materializers.snowflake import (
    LOOPBACK_GZIP_LEVEL,
    REQUEST_GZIP_LEVEL,
    _tune_request_compression,
    request_gzip_level,
)
from sophia_tasks.settings import load_settings


def test_requests_are_compressed_at_the_fast_level_and_decompress_to_the_same_body() -> None:
    from snowflake.connector import network

    _tune_request_compression()
    _tune_request_compression()  # idempotent
    body = ('{"sqlText": "MERGE ...", "bindings": ' + '"x' * 50_000 + '"}').encode()
    packed = network.gzip.compress(body)
    assert gzip.decompress(packed) == body
    assert REQUEST_GZIP_LEVEL == 1 and packed[8] == 4  # gzip header XFL: 4 = fastest, 2 = level 9
    assert network.gzip.GzipFile is gzip.GzipFile  # everything else is the real module


def test_a_local_emulator_gets_stored_blocks_and_snowflake_the_fast_level() -> None:
    from snowflake.connector import network

    emulator = load_settings({}).snowflake
    assert emulator.emulator and request_gzip_level(emulator) == LOOPBACK_GZIP_LEVEL == 0
    for host in ("localhost", "::1", "127.0.0.2"):
        assert request_gzip_level(load_settings({"SOPHIA_SNOWFLAKE_HOST": host}).snowflake) == 0
    remote = load_settings({"SOPHIA_SNOWFLAKE_HOST": "fakesnow.internal"}).snowflake
    assert request_gzip_level(remote) == REQUEST_GZIP_LEVEL
    account = load_settings({"SOPHIA_SNOWFLAKE_ACCOUNT": "xy12345"}).snowflake  # the account's own host
    assert account.host == "" and request_gzip_level(account) == REQUEST_GZIP_LEVEL

    body = b'{"bindings": "' + b"abc" * 100_000 + b'"}'
    try:
        _tune_request_compression(LOOPBACK_GZIP_LEVEL)
        stored = network.gzip.compress(body)
        assert gzip.decompress(stored) == body and len(stored) > len(body)  # stored, not deflated
        _tune_request_compression(REQUEST_GZIP_LEVEL)
        packed = network.gzip.compress(body)
        assert gzip.decompress(packed) == body and len(packed) < len(body) // 10
    finally:
        _tune_request_compression()
