"""The pipeline stages as plain functions over batches; the Celery tasks only wrap them.

Each stage takes a list and answers what goes on, what goes to the dead-letter
store and why, so tests and the benchmark can drive a stage without a broker.
"""
from __future__ import annotations

import logging
import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Callable

from sophia_tasks.core.documents import DELETE_OP, is_delete, make_document, meta
from sophia_tasks.core.flowspec import Derivation, FlowSpec, import_dotted
from sophia_tasks.materializers import BindingPaused, TransientTargetError, WriteResult, get_materializer
from sophia_tasks.settings import Settings
from sophia_tasks.store.deadletter import Letter

log = logging.getLogger(__name__)


# -- validate --------------------------------------------------------------------------
# -- validate --------------------------------------------------------------------------
@dataclass
class ValidateResult:
    documents: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    tests: list[dict[str, Any]] = field(default_factory=list)
    letters: list[Letter] = field(default_factory=list)


def _count_errors(errors: Any) -> int:
    if isinstance(errors, Mapping):
        return sum(_count_errors(v) for v in errors.values()) or 1
    if isinstance(errors, list):
        return sum(_count_errors(v) if isinstance(v, (dict, list)) else 1 for v in errors) or 1
    return 1


def validate_events(spec: FlowSpec, events: list[dict[str, Any]]) -> ValidateResult:
    result = ValidateResult()
    for event in events:
        name = event.get("collection") if isinstance(event, Mapping) else None
        collection = spec.collections.get(str(name))
        if collection is None:
            result.letters.append(Letter(stage="validate", collection=str(name), payload=_as_payload(event),
                                         error=f"unknown collection {name!r}",
                                         event_id=_get(event, "event_id")))
            continue
        if _deletes(event):
            _validate_delete(result, collection, event)
            continue
        document = event.get("document")
        body, errors = collection.validator(document)
        key = collection.key_of(document) if isinstance(document, Mapping) else None
        if key is None:  # the key is the collection's, whatever its schema requires
            errors = {**(errors or {}), collection.key: ["the key is missing: each of its pointers must hold "
                                                         "a string or a number"]}
        if errors or body is None:
            n = _count_errors(errors)
            result.letters.append(Letter(
                stage="validate", collection=collection.name, payload=dict(event),
                error=f"schema {collection.schema}: {n} field error(s): {_flatten_errors(errors)}"[:2000],
                details=errors, event_id=event.get("event_id"), document_key=key))
            continue
        _accept(result, collection.name, event, body)
    return result


def _accept(result: ValidateResult, collection: str, event: Mapping[str, Any], body: Mapping[str, Any],
            op: str | None = None) -> None:
    """The validated document with its ``_meta`` (``published_at`` first), filed as a test delivery or not."""
    m = {"published_at": event["published_at"], "event_id": event.get("event_id"), "collection": collection,
         "received_at": event.get("received_at"), "source": event.get("source", "webhook")}
    if op is not None:
        m["op"] = op
    doc = make_document(body, m)
    if event.get("is_test"):
        result.tests.append(doc)
    else:
        result.documents.setdefault(collection, []).append(doc)


def _deletes(event: Mapping[str, Any]) -> bool:
    """A delete: the event says so (a route declared as a delete) or its document does (``_meta.op``)."""
    if event.get("op") == DELETE_OP:
        return True
    document = event.get("document")
    return isinstance(document, Mapping) and is_delete(document)


def _validate_delete(result: ValidateResult, collection: Any, event: Mapping[str, Any]) -> None:
    """A delete needs its key, not the schema: it usually carries nothing else (Estuary's convention)."""
    document = event.get("document")
    key = collection.key_of(document) if isinstance(document, Mapping) else None
    if key is None or key == "":
        result.letters.append(Letter(
            stage="validate", collection=collection.name, payload=dict(event),
            error=f"delete without a key: the document has no value at {collection.key}",
            details={"key": [f"missing at {collection.key}"]}, event_id=event.get("event_id")))
        return
    _accept(result, collection.name, event, document, DELETE_OP)


def _get(event: Any, key: str) -> Any:
    return event.get(key) if isinstance(event, Mapping) else None


def _as_payload(event: Any) -> dict[str, Any]:
    return dict(event) if isinstance(event, Mapping) else {"value": event}


def _flatten_errors(errors: Any, prefix: str = "") -> str:
    parts: list[str] = []
    if isinstance(errors, Mapping):
        for k, v in errors.items():
            # JSON Schema errors are keyed by JSON pointer: "" is the document itself
            sub = f"{prefix}.{k}" if prefix else (str(k) or "(document)")
            if isinstance(v, (Mapping, list)) and not (isinstance(v, list) and all(isinstance(i, str) for i in v)):
                parts.append(_flatten_errors(v, sub))
            else:
                msgs = v if isinstance(v, list) else [v]
                parts.append(f"{sub}: {'; '.join(map(str, msgs))}")
    elif isinstance(errors, list):
        parts.append(f"{prefix}: {'; '.join(map(str, errors))}")
    else:
        parts.append(f"{prefix}: {errors}")
    return ", ".join(p for p in parts if p)


# -- derive ----------------------------------------------------------------------------
# -- derive ----------------------------------------------------------------------------
@lru_cache(maxsize=32)
def _transform(path: str) -> Callable[..., list[dict[str, Any]]]:
    return import_dotted(path)


@dataclass
class DeriveResult:
    documents: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    letters: list[Letter] = field(default_factory=list)


def _run_transform(derivation: Derivation, documents: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = _transform(derivation.transform)(documents, derivation.config)
    if not isinstance(out, list) or len(out) != len(documents):
        raise RuntimeError(f"transform {derivation.transform} must return one document per input")
    return out


def warm_derivations(spec: FlowSpec) -> None:
    """Run every derivation on no documents, so what it builds once (the enrichment's compiled
    config: 63 ms) is built before the worker's pool forks and shared, not once per process."""
    for derivation in spec.derivations.values():
        try:
            _run_transform(derivation, [])
        except Exception as exc:  # its first real batch reports it, with the documents it concerns
            log.warning("derivation %s could not be prepared: %r", derivation.name, exc)


def derive_documents(spec: FlowSpec, collection: str, documents: list[dict[str, Any]]) -> DeriveResult:
    """Run every derivation of ``collection``; a document that breaks one is isolated, not the batch."""
    result = DeriveResult()
    if spec.materializations_of(collection):
        result.documents[collection] = list(documents)
    # A delete is not transformed: it deletes the same key in every derived collection.
    deletes = [doc for doc in documents if is_delete(doc)]
    if deletes:
        documents = [doc for doc in documents if not is_delete(doc)]
    for derivation in spec.derivations_of(collection):
        if deletes:
            out = result.documents.setdefault(derivation.name, [])
            for doc in deletes:
                m = dict(meta(doc))
                m["collection"] = derivation.name
                out.append(make_document(doc, m))
        if not documents:
            continue
        try:
            pairs = list(zip(documents, _run_transform(derivation, documents), strict=True))
        except Exception:
            pairs = []
            for doc in documents:
                try:
                    pairs.append((doc, _run_transform(derivation, [doc])[0]))
                except Exception as exc:
                    log.warning("derivation %s failed for one document: %r", derivation.name, exc)
                    result.letters.append(Letter(
                        stage="derive", collection=collection, payload=doc, error=f"{derivation.name}: {exc!r}"[:2000],
                        details={"derivation": derivation.name, "exception": type(exc).__name__},
                        event_id=meta(doc).get("event_id"), document_key=spec.collection(collection).key_of(doc)))
        out = result.documents.setdefault(derivation.name, [])
        for source, derived in pairs:
            m = dict(meta(source))
            m["collection"] = derivation.name
            out.append(make_document(derived, m))
    return result


# -- materialize -----------------------------------------------------------------------
# -- materialize -----------------------------------------------------------------------
def write_isolating(write: Callable[[list[dict[str, Any]]], WriteResult],
                    documents: list[dict[str, Any]]) -> WriteResult:
    """Write a batch; on a data error split it in halves until the poison is alone.

    A target that is down raises TransientTargetError straight through: splitting
    would only multiply the waiting.
    """
    try:
        return write(documents)
    except (TransientTargetError, BindingPaused):  # the target or its table, not the documents: no split
        raise
    except Exception as exc:
        if len(documents) == 1:
            return WriteResult(failed=[(documents[0], f"{type(exc).__name__}: {exc}".strip()[:2000])])
        mid = len(documents) // 2
        left = write_isolating(write, documents[:mid])
        right = write_isolating(write, documents[mid:])
        return WriteResult(written=left.written + right.written,
                           skipped_stale=left.skipped_stale + right.skipped_stale,
                           failed=left.failed + right.failed, keyless=left.keyless + right.keyless)


def materialize_documents(settings: Settings, spec: FlowSpec, target: str, collection: str,
                          documents: list[dict[str, Any]]) -> WriteResult:
    mat = spec.materializations[target]
    binding = mat.binding_for(collection)
    if binding is None:
        raise KeyError(f"materialization {target} has no binding for {collection}")
    writer = get_materializer(mat.endpoint, settings, spec)
    return write_isolating(lambda docs: writer.write_batch(binding, docs), documents)


def backoff_seconds(settings: Settings, attempt: int, rng: random.Random | None = None) -> float:
    """Exponential backoff with jitter, capped well below the broker's visibility timeout."""
    rng = rng or random
    ceiling = min(float(settings.retry_backoff_max), settings.retry_backoff_base * (2 ** max(0, attempt - 1)))
    return round(ceiling * (0.5 + rng.random() * 0.5), 3)
