"""Part of suite cimd: the Python MCP SDK's client (mcp 2.x, OAuthClientProvider with client_metadata_url) against todo-mcp protected by a real Moat with DCR off: it must use its Client ID Metadata Document URL as client_id (no registration), complete login and consent in headless Chromium (the shared helper's CLI), and call a tool.

Run by cimd.test.mjs, which starts Moat, todo-mcp and the HTTPS document server and passes
MOAT_E2E_STACK (the stack as JSON, see lib/stack.mjs) and MOAT_E2E_CIMD_URL (the published document's
URL). The script asserts what the client did (HTTP trace, authorization URL, token claims, tool
results) and prints one line `CIMD_RESULT {json}` (client_id, access_token, consent_text) on
stdout for the suite's shared checks (document fetches, metrics, introspection, consent text).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from urllib.parse import parse_qs, urlparse

import httpx2
from mcp.client.auth import OAuthClientProvider
from mcp.client.client import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.auth import AuthorizationCodeResult, OAuthClientMetadata

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
from sdk_support import CallbackServer, MemoryStorage, browse, claims_of  # noqa: E402

STACK = json.loads(os.environ["MOAT_E2E_STACK"])
DOC_URL = os.environ["MOAT_E2E_CIMD_URL"]
MCP_URL = STACK["mcp_url"]
ISSUER = STACK["resource"]["issuer"]
RES_ID = STACK["resource"]["id"]
TOOLS = ["add_todo", "complete_todo", "delete_todo", "list_todos"]


def log(msg: str) -> None:
    print(f"[cimd python-sdk] {msg}", file=sys.stderr, flush=True)


async def main() -> int:
    callbacks = CallbackServer()
    await callbacks.start()
    storage = MemoryStorage()
    authorization_urls: list[str] = []
    browser_results: list[dict] = []
    trace: list[dict] = []

    async def open_browser(url: str) -> None:
        authorization_urls.append(url)
        browser_results.append(await browse(STACK, url))

    async def wait_for_callback() -> AuthorizationCodeResult:
        return await callbacks.next_code()

    async def record(response: httpx2.Response) -> None:
        request = response.request
        entry = {"method": request.method, "url": str(request.url), "status": response.status_code}
        body = request.content or b""
        if b"grant_type=" in body:
            form = parse_qs(body.decode())
            entry["grant_type"] = form.get("grant_type", [None])[0]
            entry["client_id"] = form.get("client_id", [None])[0]
        trace.append(entry)

    def format_trace() -> str:
        return "\n".join(f"  {e['method']} {urlparse(e['url']).path} → {e['status']}"
                         + (f" (grant_type={e['grant_type']}, client_id={e['client_id']})" if e.get("grant_type") else "")
                         for e in trace)

    provider = OAuthClientProvider(
        server_url=MCP_URL,
        # Used for DCR only, which must not happen: the redirect URI is the one the callback uses.
        client_metadata=OAuthClientMetadata(
            client_name="moat-e2e python (CIMD, DCR fallback)",
            redirect_uris=[callbacks.redirect_uri],
            grant_types=["authorization_code", "refresh_token"],
            response_types=["code"],
            token_endpoint_auth_method="none",
        ),
        storage=storage,
        redirect_handler=open_browser,
        callback_handler=wait_for_callback,
        client_metadata_url=DOC_URL,
    )
    try:
        async with httpx2.AsyncClient(auth=provider, event_hooks={"response": [record]}, timeout=httpx2.Timeout(30, read=60)) as http:
            async with Client(streamable_http_client(MCP_URL, http_client=http)) as client:
                log(f"trace:\n{format_trace()}")
                assert not any("/register" in urlparse(e["url"]).path for e in trace), f"the SDK tried DCR:\n{format_trace()}"
                assert not any(urlparse(e["url"]).netloc == urlparse(DOC_URL).netloc for e in trace), "the SDK fetched its own document"
                assert [i.client_id for i in storage.saved_client_infos] == [DOC_URL], storage.saved_client_infos
                assert len(authorization_urls) == 1, authorization_urls
                q = {k: v[0] for k, v in parse_qs(urlparse(authorization_urls[0]).query).items()}
                assert q["client_id"] == DOC_URL, q
                assert q["redirect_uri"] == callbacks.redirect_uri, q
                assert q["scope"] == "todo:read", q
                assert q["resource"] == MCP_URL, q
                assert browser_results[0]["pages"] == ["login", "consent"], browser_results
                code_req = [e for e in trace if e.get("grant_type") == "authorization_code"]
                assert len(code_req) == 1 and code_req[0]["status"] == 200, format_trace()
                assert code_req[0]["client_id"] == DOC_URL, code_req
                tokens = storage.tokens
                assert tokens is not None and tokens.token_type.lower() == "bearer", tokens
                claims = claims_of(tokens.access_token)
                assert claims["client_id"] == DOC_URL, claims
                assert claims["iss"] == ISSUER and claims["aud"] == [MCP_URL, RES_ID], claims

                names = sorted(t.name for t in (await client.list_tools()).tools)
                assert names == TOOLS, names
                listed = await client.call_tool("list_todos", {})
                assert not listed.is_error, listed
                assert isinstance(listed.structured_content.get("todos"), list), listed.structured_content
                log(f"tools/list {names}; list_todos → {listed.structured_content}")
    finally:
        await callbacks.close()
    print(f"PASS Python SDK with client_metadata_url: client_id {DOC_URL}, no DCR, {len(trace)} HTTP exchanges, list_todos OK")
    print("CIMD_RESULT " + json.dumps({
        "client_id": storage.client_info.client_id,
        "access_token": storage.tokens.access_token,
        "consent_text": browser_results[0].get("consentText"),
    }), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
