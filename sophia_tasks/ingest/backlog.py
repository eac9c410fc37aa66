"""How many documents, and how many bytes of them, wait for each target: the index behind
``estuary_materialization_lag_bytes`` and ``sophia_materialization_lag_documents``.

Why an index: on a Redis broker a queued target's message carries a claim check of a few
hundred bytes for a batch of megabytes (``sophia_tasks.pipeline.claim_checks``), and a coalesced
target's documents wait in a list, not in messages; measuring messages said "a few KB" during a
PostgreSQL outage that held gigabytes. So every stored batch is entered, per target that still
needs it, in ``sophia:backlog:<target>`` (a hash: batch key -> ``documents:bytes``), in the same
transaction or Lua call that stores it, and leaves it in the one that releases it for that target:

* a claim-checked batch (queued targets, inline retries, bulk lanes): ``ClaimStore.put`` / ``release``;
* a cut of a coalesced target buffer: the cut script / ``IngestBuffer.release``;
* documents still in a target buffer, not yet cut: the list's length and a byte counter kept
  beside it (``<buffer>:bytes``, added to by each append, taken by each cut).

Drift: entries are set and deleted by key (idempotent: a redelivery sets or deletes the same
field), and the reader drops every entry whose batch no longer exists (it expired after
``SOPHIA_BATCH_TTL_SECONDS``, or was deleted by hand), so nothing can leave a count behind forever.
A scrape costs one Lua call over a few entries per stored batch, never a scan of the keyspace.
"""
from __future__ import annotations

from typing import Any

PREFIX = "sophia:backlog:"
BYTES_SUFFIX = ":bytes"


def index_key(target: str) -> str:
    return PREFIX + target


def entry(documents: int, nbytes: int) -> str:
    return f"{int(documents)}:{int(nbytes)}"


# KEYS: one index hash per target, then per target buffer its list and its byte counter.
# ARGV: the number of targets, then per buffer the (1-based) position of its target.
# Answers {documents, bytes} per target. Entries whose batch is gone are dropped as they are read.
_READ_LUA = """
local nt = tonumber(ARGV[1])
local out = {}
for t = 1, nt do
  local docs, size = 0, 0
  local flat = redis.call('HGETALL', KEYS[t])
  for i = 1, #flat, 2 do
    if redis.call('EXISTS', flat[i]) == 1 then
      local n, b = string.match(flat[i + 1], '^(%d+):(%d+)$')
      docs = docs + tonumber(n or 0)
      size = size + tonumber(b or 0)
    else
      redis.call('HDEL', KEYS[t], flat[i])
    end
  end
  out[t] = {docs, size}
end
local j = 2
for k = nt + 1, #KEYS, 2 do
  local t = tonumber(ARGV[j])
  out[t][1] = out[t][1] + redis.call('LLEN', KEYS[k])
  out[t][2] = out[t][2] + tonumber(redis.call('GET', KEYS[k + 1]) or '0')
  j = j + 1
end
return out
"""


def read_backlog(client: Any, targets: list[str], buffers: list[tuple[str, str]]) -> dict[str, tuple[int, int]]:
    """Target -> (documents, bytes) waiting for it. ``buffers``: (target, buffer list key) of every
    coalesced target buffer. Repairs the index as it reads (entries of batches that are gone)."""
    if not targets:
        return {}
    position = {t: i + 1 for i, t in enumerate(targets)}
    keys = [index_key(t) for t in targets]
    args: list[Any] = [len(targets)]
    for target, key in buffers:
        if target in position:
            keys += [key, key + BYTES_SUFFIX]
            args.append(position[target])
    reply = client.eval(_READ_LUA, len(keys), *keys, *args)
    return {t: (int(reply[i][0]), int(reply[i][1])) for i, t in enumerate(targets)}
