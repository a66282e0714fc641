#!/bin/sh
# A `BROWSER` command for tools that "open the user's browser" through xdg-open (mcp-remote, via the
# npm package `open`): hands the URL to the shared headless helper instead of a desktop browser.
#
# Usage: BROWSER=tests/e2e/browser/open-url.sh with MOAT_E2E_EMAIL, MOAT_E2E_PASSWORD and
# MOAT_E2E_BROWSER_LOG (where the helper's JSON result and progress go: the opener runs it detached,
# with no terminal) set; MOAT_E2E_NODE picks the node binary (default: node on PATH).
set -u
url="$1"
log="${MOAT_E2E_BROWSER_LOG:-/dev/stderr}"
printf 'open-url: %s\n' "$url" >>"$log"
exec "${MOAT_E2E_NODE:-node}" "$(dirname "$0")/authorize.mjs" --url "$url" \
    --email "${MOAT_E2E_EMAIL:?}" --password "${MOAT_E2E_PASSWORD:?}" >>"$log" 2>&1
