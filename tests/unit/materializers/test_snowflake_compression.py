"""The connector's request bodies are gzipped at level 1, and stay valid gzip of the same bytes."""
from __future__ import annotations

import gzip

from sophia_tasks.materializers.snowflake import REQUEST_GZIP_LEVEL, _tune_request_compression


def test_requests_are_compressed_at_the_fast_level_and_decompress_to_the_same_body() -> None:
    from snowflake.connector import network

    _tune_request_compression()
    _tune_request_compression()  # idempotent
    body = ('{"sqlText": "MERGE ...", "bindings": ' + '"x' * 50_000 + '"}').encode()
    packed = network.gzip.compress(body)
    assert gzip.decompress(packed) == body
    assert REQUEST_GZIP_LEVEL == 1 and packed[8] == 4  # gzip header XFL: 4 = fastest, 2 = level 9
    assert network.gzip.GzipFile is gzip.GzipFile  # everything else is the real module
