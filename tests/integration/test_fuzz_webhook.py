"""Fuzz the running web app from its own OpenAPI document (/openapi.json) with schemathesis.

Real HTTP to the test stack's web server on 127.0.0.1. Positive cases (bodies the schema allows),
negative cases (bodies and headers it does not) and arbitrary credentials must never get a 5xx,
every status must be one the document declares, with the declared JSON shape; afterwards the
worker must still take a normal call through to every target (nothing the fuzzer sent wedged it).

Bounded: at most 100 cases per operation and mode (``SOPHIA_FUZZ_SCALE`` multiplies them) and
``SOPHIA_FUZZ_SECONDS`` (12 s) for each run; derandomized, so a run is repeatable.
Needs the extra test dependency in tests/requirements-fuzz.txt (schemathesis 4).
"""
from __future__ import annotations

import json
import os
import time
from collections import Counter
from typing import Any, Callable

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.integration.conftest import READ_TOKEN, TOKEN, Harness, gong_call
from tests.integration.test_pipeline import envelope, landed_everywhere

# Cases per operation and mode; SOPHIA_FUZZ_SCALE=10 (and a larger SOPHIA_FUZZ_SECONDS) for a deep run.
FUZZ_SCALE = float(os.environ.get("SOPHIA_FUZZ_SCALE", "1"))
FUZZ_SECONDS = float(os.environ.get("SOPHIA_FUZZ_SECONDS", "12"))
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
# Both paths are one handler: the first is fuzzed in depth, the second enough to show it is the same.
# The collection endpoint shares the capture path; its own part (documents, the collection) needs fewer cases.
WEBHOOKS = [("POST /estuary/webhook", 100), ("POST /webhooks/gong", 40),
            ("POST /v1/collections/{collection}/events", 30)]


def _ndjson(ctx: Any, value: Any) -> bytes:
    """The document gives NDJSON bodies as a string: send it as UTF-8 text (lone surrogates kept
    as bytes the server must refuse cleanly)."""
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode("utf-8", "surrogatepass")
    return json.dumps(value).encode()


@pytest.fixture(scope="module")
def api(harness: Harness) -> Any:
    schemathesis.serializer("application/x-ndjson")(_ndjson)
    return schemathesis.openapi.from_url(harness.url + "/openapi.json", timeout=10)


def operation(api: Any, label: str) -> Any:
    for result in api.get_all_operations():
        op = result.ok()
        if op.label == label:
            return op
    raise AssertionError(f"{label} is not in /openapi.json")


def fuzz(harness: Harness, strategy: st.SearchStrategy, examples: int,
         prepare: Callable[[Any], Any] | None = None) -> Counter:
    """Send up to ``examples`` generated cases for at most FUZZ_SECONDS; returns the status codes seen.

    Failures are collected (with a curl line to replay each) rather than raised inside Hypothesis,
    so the time bound cannot make a real failure look flaky; any failure fails the test.
    """
    seen: Counter = Counter()
    failures: list[str] = []
    examples = max(1, int(examples * FUZZ_SCALE))
    deadline = time.monotonic() + FUZZ_SECONDS
    session = requests.Session()

    @settings(max_examples=examples, deadline=None, database=None, derandomize=True,
              phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
    @given(data=strategy)
    def run(data: Any) -> None:
        if time.monotonic() > deadline:
            return
        case = prepare(data) if prepare else data
        try:
            response = case.call(base_url=harness.url, session=session, timeout=15)
            seen[response.status_code] += 1
            assert response.status_code < 500, (response.status_code, response.text[:500])
            case.validate_response(response, checks=CHECKS)
        except Exception as exc:  # a check failed, or the server dropped the connection
            failures.append(f"{type(exc).__name__}: {str(exc)[:1500]}\n  replay: {case.as_curl_command()[:1500]}")

    try:
        run()
    finally:
        session.close()
    assert failures == [], "\n\n".join(failures[:5])
    return seen


@pytest.mark.parametrize("label, examples", WEBHOOKS)
def test_fuzz_webhook_positive_and_negative_never_5xx(harness: Harness, api: Any, label: str, examples: int) -> None:
    """Schema-shaped bodies are accepted or refused with a declared 4xx; schema-violating bodies
    (wrong types, missing keys, other media types) get a declared 4xx; never a 5xx."""
    op = operation(api, label)
    auth = {"Authorization": f"Bearer {TOKEN}"}
    signing = ("webhook-id", "webhook-timestamp", "webhook-signature", "authorization")

    def bearer_only(case: Any) -> Any:
        """The spec declares every auth scheme; these cases fuzz bodies and media types under a valid
        token, so the generated credentials of the other schemes are dropped (they have tests of their own)."""
        case.headers = {**{k: v for k, v in (case.headers or {}).items() if k.lower() not in signing}, **auth}
        return case

    positive = fuzz(harness, op.as_strategy(generation_mode=GenerationMode.POSITIVE, headers=auth), examples,
                    prepare=bearer_only)
    negative = fuzz(harness, op.as_strategy(generation_mode=GenerationMode.NEGATIVE, headers=auth), examples,
                    prepare=bearer_only)
    assert sum(positive.values()) >= 20 and sum(negative.values()) >= 20, (positive, negative)
    assert positive[202] + positive[200] > 0, positive  # some generated calls really went in
    assert set(negative) - {200, 202} and set(negative) <= {200, 202, 400, 413, 415}, negative


def test_fuzz_webhook_credentials_never_5xx(harness: Harness, api: Any) -> None:
    """Arbitrary Authorization values and Standard Webhooks headers: 401/403 (or a 2xx/4xx when the
    value happens to be the real token), never a 5xx."""
    op = operation(api, "POST /estuary/webhook")
    # No leading or trailing space: the HTTP client refuses to send such a header before any request is made.
    header_text = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=80).map(str.strip)
    strategy = st.tuples(
        op.as_strategy(generation_mode=GenerationMode.POSITIVE),
        st.one_of(header_text, header_text.map(lambda s: "Bearer " + s), st.just(f"Bearer {TOKEN}x"),
                  st.just("Bearer a.b.c"), st.just("eyJhbGciOiJub25lIn0.e30.")),
        st.dictionaries(st.sampled_from(["webhook-id", "webhook-timestamp", "webhook-signature"]), header_text),
    )

    def prepare(data: Any) -> Any:
        case, authorization, signature_headers = data
        case.headers = {**(case.headers or {}), "Authorization": authorization, **signature_headers}
        return case

    seen = fuzz(harness, strategy, 60, prepare)
    assert sum(seen.values()) >= 20 and set(seen) <= {401, 403}, seen


def test_fuzz_document_lookup_never_5xx(harness: Harness, api: Any) -> None:
    op = operation(api, "GET /v1/collections/{collection}/documents/{key}")
    read = {"Authorization": f"Bearer {READ_TOKEN}"}
    seen = fuzz(harness, op.as_strategy(generation_mode=GenerationMode.POSITIVE, headers=read), 40)
    assert sum(seen.values()) >= 20 and set(seen) <= {200, 404}, seen


def test_worker_still_processes_a_normal_call_after_fuzzing(harness: Harness, api: Any) -> None:
    """Runs after the fuzz tests above (file order): whatever they enqueued, a plain call lands."""
    call = gong_call()
    resp = harness.post(envelope(call))
    assert resp.status_code == 202, resp.text
    harness.wait(lambda: landed_everywhere(harness, call["metaData"]["id"]), 60, "a normal call after the fuzzing")
    assert harness.http.get(harness.url + "/healthz", timeout=5).status_code == 200
    web_log = harness.stack.processes["web"].log_path.read_text(errors="replace")
    assert "Traceback" not in web_log and "unhandled error" not in web_log
