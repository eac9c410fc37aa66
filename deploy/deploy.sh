#!/usr/bin/env bash
# deploy/deploy.sh - put sophia-tasks in place on this machine (successor of deploy-estuary-flow.sh).
#
# 1. validates the flow spec                  (sophia-tasks flows validate)
# 2. validates the configuration and auth     (sophia-tasks check --only config)
# 3. checks broker and targets are reachable  (sophia-tasks check --only broker ... snowflake)
# 4. creates or migrates the tables           (sophia-tasks migrate; idempotent)
# 5. prints the webhook URL, a curl line that works, and the processes to start (Procfile)
#
# --dry-run changes nothing: steps 1-3 only read, step 4 says what it would do.
# Safe to run twice: every step is idempotent. Exits non-zero at the first failing step.
set -euo pipefail

usage() {
    cat <<'EOF'
Usage: deploy/deploy.sh [--dry-run] [--help]

Validate the flow spec and configuration, check the broker, Redis, PostgreSQL and
Snowflake are reachable, create or migrate the tables, then print the webhook URL,
a curl line to try it and the processes to start.

  --dry-run   change nothing; say what would be done
  -h, --help  this text

Environment: the SOPHIA_* variables of the service (see README), plus
  SOPHIA_TASKS_CLI  the sophia-tasks executable (default: .venv/bin/sophia-tasks, else PATH)
  SOPHIA_PUBLIC_URL the public base URL of the web process (default http://127.0.0.1:$PORT)
EOF
}

DRY_RUN=0
for arg in "$@"; do
    case "$arg" in
        --dry-run|-n) DRY_RUN=1 ;;
        -h|--help) usage; exit 0 ;;
        *) echo "error: unknown argument '$arg' (try --help)" >&2; exit 2 ;;
    esac
done

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

fail() { echo "error: $*" >&2; exit 1; }
# The command that failed already printed its one-line "error: ..." reason; say where we stopped.
stop() { echo "deploy: stopped at step $*" >&2; exit 1; }
step() { printf '\n==> %s\n' "$*"; }

CLI="${SOPHIA_TASKS_CLI:-}"
if [ -z "$CLI" ]; then
    if [ -x "$ROOT/.venv/bin/sophia-tasks" ]; then
        CLI="$ROOT/.venv/bin/sophia-tasks"
    elif command -v sophia-tasks >/dev/null 2>&1; then
        CLI="$(command -v sophia-tasks)"
    else
        fail "sophia-tasks is not installed: run 'make install' first"
    fi
fi

if [ "$DRY_RUN" = 1 ]; then
    echo "deploy (dry run): nothing will be changed"
else
    echo "deploy"
fi

step "1/5 flow spec"
"$CLI" flows validate || stop "1/5 (flow spec); nothing was changed"

step "2/5 configuration"
"$CLI" check --only config || stop "2/5 (configuration); nothing was changed"

step "3/5 broker and targets"
"$CLI" check --only broker --only redis --only postgres --only snowflake \
    || stop "3/5 (broker and targets); nothing was changed"

step "4/5 tables"
if [ "$DRY_RUN" = 1 ]; then
    echo "would run: $CLI migrate   (create the database, the service tables and every target's tables if missing)"
else
    "$CLI" migrate || stop "4/5 (tables)"
fi

step "5/5 run it"
PORT="${PORT:-9009}"
BASE="${SOPHIA_PUBLIC_URL:-http://127.0.0.1:${PORT}}"
BASE="${BASE%/}"
echo "webhook URL:  ${BASE}/webhooks/gong   (the same handler: ${BASE}/estuary/webhook)"
echo "health:       ${BASE}/healthz   readiness: ${BASE}/readyz   metrics: ${BASE}/metrics"
echo
if [ -n "${SOPHIA_WEBHOOK_TOKENS:-}" ]; then
    echo "try it (the token expands from SOPHIA_WEBHOOK_TOKENS in your shell, it is not printed here):"
else
    echo "try it once SOPHIA_WEBHOOK_TOKENS is set (without a token, sign requests with SOPHIA_WEBHOOK_SECRET):"
fi
# shellcheck disable=SC2016  # printed for the operator's shell to expand, on purpose
printf '%s\n' "curl -X POST ${BASE}/estuary/webhook -H \"Authorization: Bearer \${SOPHIA_WEBHOOK_TOKENS%%,*}\" -d '{\"type\": \"call_completed\", \"data\": {\"metaData\": {\"id\": \"1000000001\", \"title\": \"deploy check\", \"started\": \"2026-01-05T10:00:00Z\"}}}'"
echo
echo "processes to start (Procfile; all at once: make up, or honcho start):"
if [ -f "$ROOT/Procfile" ]; then
    while IFS= read -r line; do
        case "$line" in
            ''|'#'*) continue ;;
            snowflake:*)
                if [ -n "${SOPHIA_SNOWFLAKE_ACCOUNT:-}" ]; then continue; fi
                echo "  $line   (dev only: the local Snowflake emulator)" ;;
            *) echo "  $line" ;;
        esac
    done < "$ROOT/Procfile"
else
    echo "  (no Procfile found in $ROOT)"
fi
if [ "$DRY_RUN" = 1 ]; then
    echo
    echo "dry run complete: nothing was changed; run without --dry-run to migrate"
else
    echo
    echo "deploy complete"
fi
