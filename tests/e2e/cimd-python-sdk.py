"""Part of suite cimd: the Python MCP SDK's client (mcp 2.x, OAuthClientProvider with client_metadata_url) against todo-mcp protected by a real Moat with DCR off: it must use its Client ID Metadata Document URL as client_id (no registration), complete login and consent in headless Chromium (the shared helper's CLI), and call a tool.

Run by cimd.test.mjs, which starts Moat, todo-mcp and the HTTPS document server and passes
MOAT_E2E_STACK (the stack as JSON, see lib/stack.mjs) and MOAT_E2E_CIMD_URL (the published document's
URL). The script asserts what the client did (HTTP trace, authorization URL, token claims, tool
results) and prints one line `CIMD_RESULT {json}` (client_id, access_token, consent_text) on
stdout for the suite's shared checks (document fetches, metrics, introspection, consent text).
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import sys
from urllib.parse import parse_qs, urlparse

import httpx2
from mcp.client.auth import OAuthClientProvider
from mcp.client.client import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.auth import AuthorizationCodeResult, OAuthClientInformationFull, OAuthClientMetadata, OAuthToken

STACK = json.loads(os.environ["MOAT_E2E_STACK"])
DOC_URL = os.environ["MOAT_E2E_CIMD_URL"]
MCP_URL = STACK["mcp_url"]
ISSUER = STACK["resource"]["issuer"]
RES_ID = STACK["resource"]["id"]
TOOLS = ["add_todo", "complete_todo", "delete_todo", "list_todos"]


def log(msg: str) -> None:
    print(f"[cimd python-sdk] {msg}", file=sys.stderr, flush=True)


def claims_of(token: str) -> dict:
    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


class MemoryStorage:
    """The SDK's TokenStorage, in memory."""

    def __init__(self) -> None:
        self.tokens: OAuthToken | None = None
        self.client_info: OAuthClientInformationFull | None = None
        self.saved_client_infos: list[OAuthClientInformationFull] = []

    async def get_tokens(self) -> OAuthToken | None:
        return self.tokens

    async def set_tokens(self, tokens: OAuthToken) -> None:
        self.tokens = tokens

    async def get_client_info(self) -> OAuthClientInformationFull | None:
        return self.client_info

    async def set_client_info(self, client_info: OAuthClientInformationFull) -> None:
        self.client_info = client_info
        self.saved_client_infos.append(client_info)


class Callbacks:
    """A loopback server receiving the authorization redirect(s)."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[str] = asyncio.Queue()
        self.server: asyncio.base_events.Server | None = None
        self.port = 0

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]

    @property
    def redirect_uri(self) -> str:
        return f"http://127.0.0.1:{self.port}/callback"

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        request_line = (await reader.readline()).decode("latin-1")
        while (await reader.readline()) not in (b"\r\n", b"\n", b""):
            pass
        target = request_line.split(" ")[1] if " " in request_line else "/"
        found = urlparse(target).path == "/callback"
        body = b"Authorization received; you can close this page." if found else b"not found"
        status = b"200 OK" if found else b"404 Not Found"
        writer.write(b"HTTP/1.1 " + status + b"\r\nContent-Type: text/plain\r\nContent-Length: "
                     + str(len(body)).encode() + b"\r\nConnection: close\r\n\r\n" + body)
        await writer.drain()
        writer.close()
        if found:
            await self.queue.put(f"http://127.0.0.1:{self.port}{target}")

    async def close(self) -> None:
        if self.server:
            self.server.close()
            await self.server.wait_closed()


async def main() -> int:
    callbacks = Callbacks()
    await callbacks.start()
    storage = MemoryStorage()
    authorization_urls: list[str] = []
    browser_results: list[dict] = []
    trace: list[dict] = []

    async def open_browser(url: str) -> None:
        authorization_urls.append(url)
        proc = await asyncio.create_subprocess_exec(
            STACK["node"], STACK["browser_helper"], "--url", url, "--email", STACK["email"], "--password", STACK["password"],
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(proc.communicate(), timeout=90)
        if proc.returncode != 0:
            raise AssertionError(f"browser helper failed ({proc.returncode}):\n{err.decode()}")
        browser_results.append(json.loads(out.decode().strip().splitlines()[-1]))

    async def wait_for_callback() -> AuthorizationCodeResult:
        url = await asyncio.wait_for(callbacks.queue.get(), timeout=30)
        q = parse_qs(urlparse(url).query)
        assert "error" not in q, f"authorization error at the callback: {url}"
        return AuthorizationCodeResult(code=q["code"][0], state=q.get("state", [None])[0], iss=q.get("iss", [None])[0])

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
