#!/usr/bin/env bash
# Installs everything Moat's end-to-end tests need (Debian Chromium, pinned Node packages, a pinned Python venv); idempotent and fast when already installed.
#
# Run as root on a Debian machine (CI runs it on a clean clone):  bash tests/e2e/setup.sh
# What it installs:
#   - Debian's `chromium` at /usr/bin/chromium (headless browser for the login/consent pages);
#   - Debian's `faketime` (libfaketime, for the negative suite's expired-token check);
#   - Debian's `openssl` CLI (the cimd suite makes a throw-away CA and server certificate);
#   - tests/e2e/node_modules from package.json + package-lock.json with `npm ci` (the npm package
#     `node` provides the Node 22 binary the conformance suite needs, at node_modules/node/bin/node);
#   - tests/e2e/.venv with requirements.txt (Python MCP SDK 2.x and friends).
# Each step is skipped when a stamp shows the same inputs are already installed.
set -euo pipefail

E2E_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$E2E_DIR"

log() { printf '[e2e setup] %s\n' "$*" >&2; }
die() { printf '[e2e setup] ERROR: %s\n' "$*" >&2; exit 1; }

# sha256 of the given files, concatenated; used as an install stamp.
fingerprint() { cat "$@" | sha256sum | cut -d' ' -f1; }

# --- 1. Debian Chromium ---------------------------------------------------------------------
install_chromium() {
    if [[ -x /usr/bin/chromium ]]; then
        return 0
    fi
    [[ $(id -u) -eq 0 ]] || die "/usr/bin/chromium is missing and installing it needs root (apt-get install chromium)"
    export DEBIAN_FRONTEND=noninteractive
    # `apt-get update` only when needed: no candidate in the package lists, or the install
    # failed (stale lists point at files the mirror no longer has).
    local candidate
    candidate="$(apt-cache policy chromium 2>/dev/null | awk '/Candidate:/ {print $2}')"
    if [[ -z "$candidate" || "$candidate" == "(none)" ]]; then
        log "apt-get update (no chromium candidate in the package lists)"
        apt-get update -qq
    fi
    log "apt-get install chromium"
    if ! apt-get install -y -qq --no-install-recommends chromium >/dev/null; then
        log "install failed; refreshing package lists and retrying"
        apt-get update -qq
        apt-get install -y -qq --no-install-recommends chromium >/dev/null
    fi
    [[ -x /usr/bin/chromium ]] || die "chromium was installed but /usr/bin/chromium is missing"
}

# --- 1b. libfaketime (the negative suite runs a second todo-mcp with its clock ahead, to present a
# genuinely expired Moat token without waiting out a real token lifetime) -----------------------
install_faketime() {
    if compgen -G '/usr/lib/*/faketime/libfaketime.so.1' >/dev/null || [[ -e /usr/lib/faketime/libfaketime.so.1 ]]; then
        return 0
    fi
    [[ $(id -u) -eq 0 ]] || die "libfaketime is missing and installing it needs root (apt-get install faketime)"
    export DEBIAN_FRONTEND=noninteractive
    log "apt-get install faketime"
    if ! apt-get install -y -qq --no-install-recommends faketime >/dev/null; then
        log "install failed; refreshing package lists and retrying"
        apt-get update -qq
        apt-get install -y -qq --no-install-recommends faketime >/dev/null
    fi
}

# --- 1c. the openssl CLI (the cimd suite makes a CA and a certificate for its HTTPS document server)
install_openssl() {
    command -v openssl >/dev/null && return 0
    [[ $(id -u) -eq 0 ]] || die "the openssl CLI is missing and installing it needs root (apt-get install openssl)"
    export DEBIAN_FRONTEND=noninteractive
    log "apt-get install openssl"
    if ! apt-get install -y -qq --no-install-recommends openssl >/dev/null; then
        log "install failed; refreshing package lists and retrying"
        apt-get update -qq
        apt-get install -y -qq --no-install-recommends openssl >/dev/null
    fi
}

# --- 2. Node packages (npm ci) ----------------------------------------------------------------
NODE22="$E2E_DIR/node_modules/node/bin/node"
NPM_STAMP="$E2E_DIR/node_modules/.moat-e2e-setup.stamp"

node22_ok() {
    [[ -x "$NODE22" ]] && [[ "$("$NODE22" --version 2>/dev/null)" == v22.* ]]
}

install_node_packages() {
    command -v npm >/dev/null || die "npm is not installed (the machine's Node.js/npm is needed to run npm ci)"
    local want
    want="$(fingerprint package.json package-lock.json)"
    if [[ -f "$NPM_STAMP" && "$(cat "$NPM_STAMP")" == "$want" ]] && node22_ok \
        && [[ -f node_modules/playwright-core/package.json ]] \
        && [[ -f node_modules/@modelcontextprotocol/conformance/package.json ]]; then
        return 0
    fi
    log "npm ci (tests/e2e/package-lock.json)"
    # playwright-core never downloads a browser; the variable makes sure nothing else tries.
    PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund --loglevel=error \
        || die "npm ci failed in $E2E_DIR"
    node22_ok || die "the npm package 'node' did not provide a Node 22 binary at $NODE22 (its preinstall script must be allowed: see allowScripts in package.json)"
    printf '%s\n' "$want" >"$NPM_STAMP"
}

# --- 3. Python venv ---------------------------------------------------------------------------
VENV="$E2E_DIR/.venv"
VENV_STAMP="$VENV/.moat-e2e-setup.stamp"

install_python_venv() {
    local want
    want="$(fingerprint requirements.txt)"
    if [[ -f "$VENV_STAMP" && "$(cat "$VENV_STAMP")" == "$want" && -x "$VENV/bin/python" ]]; then
        return 0
    fi
    command -v python3 >/dev/null || die "python3 is not installed"
    if [[ ! -x "$VENV/bin/python" ]]; then
        log "python3 -m venv tests/e2e/.venv"
        python3 -m venv "$VENV" || die "could not create the venv (is python3-venv installed?)"
    fi
    log "pip install -r tests/e2e/requirements.txt"
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r requirements.txt \
        || die "pip install -r requirements.txt failed"
    "$VENV/bin/python" -c 'import mcp, jwt, httpx' || die "the venv cannot import mcp, jwt and httpx"
    printf '%s\n' "$want" >"$VENV_STAMP"
}

start=$SECONDS
install_chromium
install_faketime
install_openssl
install_node_packages
install_python_venv
mkdir -p "$E2E_DIR/.work"
log "ready in $((SECONDS - start))s: $(/usr/bin/chromium --version 2>/dev/null | head -n1); node $("$NODE22" --version); $("$VENV/bin/python" --version)"
