#!/usr/bin/env bash
# Runs Moat's end-to-end suites (real third-party clients against a real `moat serve`, through the real login/consent pages in headless Chromium) and prints a summary.
#
# Usage:  tests/e2e/run.sh [SUITE ...]        (default: every suite in SUITES below)
# Needs:  tests/e2e/setup.sh has run, and the binary is built:  cargo build -p moat-server --bin moat
# Env:    MOAT_BIN  the moat binary under test (default: target/debug/moat)
# Each suite's full output also goes to tests/e2e/.work/logs/<suite>.log.
# Exit code: 0 when every suite passed, 1 otherwise (2 when the prerequisites are missing).
#
# Adding a suite: write a function `suite_<name>` that runs it and returns non-zero on failure,
# and add <name> to SUITES.
set -uo pipefail

E2E_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_DIR="$(cd "$E2E_DIR/../.." && pwd)"
NODE22="$E2E_DIR/node_modules/node/bin/node"
PYTHON="$E2E_DIR/.venv/bin/python"
LOG_DIR="$E2E_DIR/.work/logs"

MOAT_BIN="${MOAT_BIN:-target/debug/moat}"
case "$MOAT_BIN" in /*) ;; *) MOAT_BIN="$REPO_DIR/$MOAT_BIN" ;; esac
export MOAT_BIN

SUITES=(browser_helper conformance_as ts_sdk python_sdk mcp_remote conformance_server negative interop other_servers two_instances cimd)

# ---- suites ------------------------------------------------------------------------------------

# The shared headless-browser helper itself, against Moat's real pages (approve, deny, wrong
# password, error page, unreachable callback, CLI contract).
suite_browser_helper() {
    "$NODE22" --test --test-reporter=spec "$E2E_DIR/browser-helper.test.mjs"
}

# Official MCP conformance suite, `authorization` scenarios, public + confidential client.
suite_conformance_as() {
    "$NODE22" "$E2E_DIR/conformance-as.mjs"
}

# MCP clients against todo-mcp protected by a real Moat (each suite starts its own moat serve and
# todo-mcp; see tests/e2e/README.md). Needs also: cargo build -p todo-mcp (or set TODO_MCP_BIN).

# TypeScript SDK client: DCR, authorization through the real pages, tools, step-up.
suite_ts_sdk() {
    "$NODE22" --test --test-reporter=spec "$E2E_DIR/ts-sdk.test.mjs"
}

# Python SDK client (mcp 2.x): the same flow including step-up; the stack launcher starts Moat and
# todo-mcp and passes them to the script in MOAT_E2E_STACK.
suite_python_sdk() {
    "$NODE22" "$E2E_DIR/lib/stack.mjs" --name python-sdk -- "$PYTHON" "$E2E_DIR/python-sdk.py"
}

# mcp-remote-client: DCR with its localhost callback, browser step through BROWSER, tools/list.
suite_mcp_remote() {
    "$NODE22" --test --test-reporter=spec "$E2E_DIR/mcp-remote.test.mjs"
}

# Official MCP conformance suite, `server` scenarios, against todo-mcp behind a token proxy.
suite_conformance_server() {
    "$NODE22" "$E2E_DIR/conformance-server.mjs"
}

# Bad tokens and requests against todo-mcp: exact 401/403 challenges.
suite_negative() {
    "$NODE22" --test --test-reporter=spec "$E2E_DIR/negative.test.mjs"
}

# Moat's tokens validated by jose (Node) and PyJWT (Python), for ES256, EdDSA and RS256.
suite_interop() {
    "$NODE22" --test --test-reporter=spec "$E2E_DIR/interop.test.mjs"
}

# The TypeScript (SDK + jose) and Python (SDK + PyJWT) servers of
# docs/protecting-typescript-and-python-servers.md, against a real Moat.
suite_other_servers() {
    "$NODE22" --test --test-reporter=spec "$E2E_DIR/other-servers.test.mjs"
}

# Two `moat serve` on one PostgreSQL schema behind a round-robin proxy (the public URL), used by the
# TypeScript SDK client: authorize, login, consent, token and refreshes alternate between the
# instances. PostgreSQL: MOAT_TEST_POSTGRES_URL, else 127.0.0.1:5432, else skipped with a message.
suite_two_instances() {
    "$NODE22" --test --test-reporter=spec "$E2E_DIR/two-instances.mjs"
}

# Client ID Metadata Documents: the TypeScript SDK (clientMetadataUrl), the Python SDK
# (client_metadata_url, cimd-python-sdk.py) and mcp-remote (--client-metadata-url) against todo-mcp
# and a Moat with DCR off; the documents come from a local HTTPS server with a CA made by openssl.
suite_cimd() {
    "$NODE22" --test --test-reporter=spec "$E2E_DIR/cimd.test.mjs"
}

# ---- prerequisites -----------------------------------------------------------------------------

preflight() {
    local missing=()
    [[ -x /usr/bin/chromium ]] || missing+=("Debian chromium (/usr/bin/chromium)")
    [[ -x "$NODE22" ]] || missing+=("Node 22 from the npm package 'node' ($NODE22)")
    [[ -f "$E2E_DIR/node_modules/playwright-core/package.json" ]] || missing+=("tests/e2e/node_modules (npm ci)")
    [[ -x "$PYTHON" ]] || missing+=("the Python venv tests/e2e/.venv")
    if ((${#missing[@]})); then
        printf 'e2e: missing: %s\n' "${missing[@]}" >&2
        printf 'e2e: run  bash tests/e2e/setup.sh  first (as root; it is idempotent).\n' >&2
        return 2
    fi
    local todo_bin="${TODO_MCP_BIN:-$REPO_DIR/target/debug/todo-mcp}"
    if [[ ! -x "$todo_bin" ]]; then
        printf 'e2e: the todo-mcp binary %s does not exist.\n' "$todo_bin" >&2
        printf 'e2e: build it first:  cargo build -p todo-mcp   (or set TODO_MCP_BIN)\n' >&2
        return 2
    fi
    if [[ ! -x "$MOAT_BIN" ]]; then
        printf 'e2e: the moat binary %s does not exist.\n' "$MOAT_BIN" >&2
        printf 'e2e: build it first:  cargo build -p moat-server --bin moat   (or set MOAT_BIN)\n' >&2
        return 2
    fi
    # A stale binary makes confusing failures: say so (but go on; it may be deliberate).
    local newer
    local sources=("$REPO_DIR"/crates/*/src "$REPO_DIR"/crates/*/templates "$REPO_DIR"/crates/*/migrations "$REPO_DIR"/crates/*/Cargo.toml)
    newer="$(find "${sources[@]}" -newer "$MOAT_BIN" -type f -print -quit 2>/dev/null)"
    if [[ -n "$newer" ]]; then
        printf 'e2e: warning: %s is older than %s; rebuild with  cargo build -p moat-server --bin moat\n' \
            "${MOAT_BIN#"$REPO_DIR"/}" "${newer#"$REPO_DIR"/}" >&2
    fi
}

# ---- main --------------------------------------------------------------------------------------

main() {
    local selected=("$@")
    ((${#selected[@]})) || selected=("${SUITES[@]}")
    for s in "${selected[@]}"; do
        if ! declare -F "suite_$s" >/dev/null; then
            printf 'e2e: unknown suite "%s"; known: %s\n' "$s" "${SUITES[*]}" >&2
            return 2
        fi
    done
    preflight || return $?
    mkdir -p "$LOG_DIR"

    local -a names=() statuses=() times=()
    local started=$SECONDS
    for s in "${selected[@]}"; do
        printf '\n=== e2e suite: %s ===\n' "$s"
        local t0=$SECONDS rc
        (cd "$REPO_DIR" && "suite_$s") 2>&1 | tee "$LOG_DIR/$s.log"
        rc=${PIPESTATUS[0]}
        names+=("$s")
        statuses+=("$rc")
        times+=("$((SECONDS - t0))")
    done

    local passed=0 failed=0
    printf '\n=== e2e summary (moat: %s) ===\n' "${MOAT_BIN#"$REPO_DIR"/}"
    for i in "${!names[@]}"; do
        if [[ "${statuses[$i]}" == 0 ]]; then
            passed=$((passed + 1))
            printf 'PASS  %-24s %4ss\n' "${names[$i]}" "${times[$i]}"
        else
            failed=$((failed + 1))
            printf 'FAIL  %-24s %4ss  (exit %s; log: tests/e2e/.work/logs/%s.log)\n' \
                "${names[$i]}" "${times[$i]}" "${statuses[$i]}" "${names[$i]}"
        fi
    done
    printf 'e2e time: %ss\n' "$((SECONDS - started))"
    printf 'e2e: %d passed, %d failed\n' "$passed" "$failed"
    ((failed == 0))
}

main "$@"
