"""Redis hot cache: one pipelined script call per chunk, last write wins by version."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson
import redis as redis_lib

from sophia_tasks.core.documents import encoded, is_delete, latest_per_key, version_of
from sophia_tasks.core.flowspec import Binding, FlowSpec, Projection
from sophia_tasks.materializers.base import TransientTargetError, WriteResult, register
from sophia_tasks.materializers.projection import keyed
from sophia_tasks.settings import Settings

# For each (key, tombstone) pair of KEYS: keep the stored value when its _meta.published_at is
# newer than the incoming one. Versions are fixed-width UTC strings, so string order is time order;
# _meta is serialised first and published_at first inside it, so the first match is ours.
# An empty value is a delete: the key is dropped and its tombstone keeps the delete's version
# for the binding's TTL, so an older upsert that arrives later stays deleted. A delete wins a tie.
LWW_SET = """
local ttl = tonumber(ARGV[1])
local written = 0
for i = 1, #KEYS, 2 do
  local n = (i + 1) / 2
  local version = ARGV[2 * n]
  local value = ARGV[2 * n + 1]
  local current = redis.call('GET', KEYS[i])
  local stale = false
  if current then
    local cv = string.match(current, '^{"_meta":{"published_at":"([^"]*)"')
    if cv and cv > version then stale = true end
  end
  if not stale then
    local tv = redis.call('GET', KEYS[i + 1])
    if tv and (tv > version or (tv == version and value ~= '')) then stale = true end
  end
  if not stale then
    if value == '' then
      redis.call('DEL', KEYS[i])
      redis.call('SET', KEYS[i + 1], version, 'EX', ttl)
    else
      redis.call('SET', KEYS[i], value, 'EX', ttl)
    end
    written = written + 1
  end
end
return written
"""
#: Where a deleted key's tombstone lives: outside every binding's key prefix, so reads and scans never see it.
TOMBSTONE_PREFIX = "sophia:tombstone:"

CHUNK = 200


class RedisMaterializer:
    name = "redis"

    def __init__(self, settings: Settings, spec: FlowSpec) -> None:
        self.spec = spec
        self.client = redis_lib.Redis.from_url(settings.redis_url, socket_connect_timeout=5, socket_timeout=30,
                                               health_check_interval=30)
        self.script = self.client.register_script(LWW_SET)

    def key(self, binding: Binding, key: str) -> str:
        return f"{binding.key_prefix}{key}"

    def write_batch(self, binding: Binding, documents: list[dict[str, Any]]) -> WriteResult:
        pairs, bad = keyed(self.spec, binding, documents)
        pairs = latest_per_key(pairs)
        result = WriteResult(keyless=list(bad))
        ttl = binding.ttl_seconds
        try:
            pipe = self.client.pipeline(transaction=False)
            calls = 0
            for start in range(0, len(pairs), CHUNK):
                chunk = pairs[start:start + CHUNK]
                keys: list[str] = []
                args: list[Any] = [ttl]
                for k, doc in chunk:
                    key = self.key(binding, k)
                    keys += (key, TOMBSTONE_PREFIX + key)
                    args.append(version_of(doc))
                    args.append(b"" if is_delete(doc) else encoded(doc))
                self.script(keys=keys, args=args, client=pipe)
                calls += len(chunk)
            replies = pipe.execute() if calls else []
        except (redis_lib.ConnectionError, redis_lib.TimeoutError) as exc:
            raise TransientTargetError(f"redis unreachable: {exc}") from exc
        result.written = int(sum(int(r) for r in replies))
        result.skipped_stale = len(pairs) - result.written
        return result

    def count(self, binding: Binding) -> int:
        n = 0
        for _ in self.client.scan_iter(match=f"{binding.key_prefix}*", count=1000):
            n += 1
        return n

    def fetch(self, binding: Binding, key: str) -> dict[str, Any] | None:
        raw = self.client.get(self.key(binding, key))
        return orjson.loads(raw) if raw else None

    # -- erasure ----------------------------------------------------------------------
    def erase(self, binding: Binding, keys: list[str]) -> int:
        """``DEL`` the keys, one pipeline per chunk: a hard delete, whatever the value holds."""
        return self._per_chunk(binding, keys, "delete")

    def count_keys(self, binding: Binding, keys: list[str]) -> int:
        return self._per_chunk(binding, keys, "exists")

    def _per_chunk(self, binding: Binding, keys: list[str], command: str) -> int:
        names = [self.key(binding, k) for k in dict.fromkeys(keys)]
        if not names:
            return 0
        try:
            pipe = self.client.pipeline(transaction=False)
            for start in range(0, len(names), CHUNK):
                getattr(pipe, command)(*names[start:start + CHUNK])
            return int(sum(int(r) for r in pipe.execute()))
        except (redis_lib.ConnectionError, redis_lib.TimeoutError) as exc:
            raise TransientTargetError(f"redis unreachable: {exc}") from exc

    def search(self, binding: Binding, address: str) -> list[str]:
        """SCAN the binding's prefix and read the values a chunk at a time (one MGET each)."""
        from sophia_tasks.core.addresses import AddressMatcher

        matcher = AddressMatcher(address)
        prefix = binding.key_prefix
        found: list[str] = []
        chunk: list[bytes] = []

        def look(names: list[bytes]) -> None:
            for name, raw in zip(names, self.client.mget(names), strict=True):
                if not raw or not matcher.may_be_in(raw):
                    continue
                try:
                    hit = matcher.names(orjson.loads(raw))
                except orjson.JSONDecodeError:  # not written by us: look at the text itself
                    hit = matcher.in_text(raw.decode("utf-8", "replace"))
                if hit:
                    found.append(name.decode()[len(prefix):])

        try:
            for name in self.client.scan_iter(match=f"{self._glob_escape(prefix)}*", count=1000):
                chunk.append(name)
                if len(chunk) >= CHUNK:
                    look(chunk)
                    chunk = []
            if chunk:
                look(chunk)
        except (redis_lib.ConnectionError, redis_lib.TimeoutError) as exc:
            raise TransientTargetError(f"redis unreachable: {exc}") from exc
        return found

    @staticmethod
    def _glob_escape(text: str) -> str:
        """A key prefix as a literal in a SCAN pattern (``*?[]\\`` are glob characters)."""
        return "".join("\\" + ch if ch in "*?[]\\" else ch for ch in text)

    def close(self) -> None:
        self.client.close()


def check_resource(resource: Mapping[str, Any], source: str, projections: tuple[Projection, ...],
                   where: str) -> list[str]:
    """A Redis binding's resource: the TTL and the key prefix."""
    problems = []
    ttl = resource.get("ttl_seconds", 86400)
    if not isinstance(ttl, int) or isinstance(ttl, bool) or ttl < 1:
        problems.append(f"{where}.ttl_seconds: must be a positive integer, got {ttl!r}")
    prefix = resource.get("key_prefix", f"sophia:{source}:")
    if not isinstance(prefix, str) or not prefix or any(ch.isspace() for ch in prefix):
        problems.append(f"{where}.key_prefix: must be a non-empty string without spaces")
    elif prefix.startswith(TOMBSTONE_PREFIX):
        problems.append(f"{where}.key_prefix: {TOMBSTONE_PREFIX!r} is where deleted keys' tombstones live")
    if resource.get("soft_delete"):
        problems.append(f"{where}.soft_delete: a cache drops deleted keys; soft deletes are for tables")
    return problems


@register("redis", check_resource)
def factory(settings: Settings, spec: FlowSpec) -> RedisMaterializer:
    return RedisMaterializer(settings, spec)
