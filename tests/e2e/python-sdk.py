"""Suite python_sdk: the Python MCP SDK's client (mcp 2.x, streamable HTTP + its OAuthClientProvider) against todo-mcp protected by a real Moat: discovery, DCR, authorization through the real pages in headless Chromium (the shared helper's CLI), token, tools; then step-up from todo:read to todo:write.

Run through the stack launcher, which starts Moat and todo-mcp and passes their coordinates in
MOAT_E2E_STACK:
    node tests/e2e/lib/stack.mjs -- tests/e2e/.venv/bin/python tests/e2e/python-sdk.py
The SDK hides HTTP statuses (it turns a 403 into a generic error or handles it inline), so every
exchange of its HTTP client is recorded with response hooks and the checks assert the trace.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
import traceback
from dataclasses import dataclass, field
from urllib.parse import parse_qs, urlparse

import httpx2
from mcp.client.auth import OAuthClientProvider
from mcp.client.client import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.auth import AuthorizationCodeResult, OAuthClientMetadata

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
from sdk_support import CallbackServer, MemoryStorage, browse, claims_of  # noqa: E402

STACK = json.loads(os.environ["MOAT_E2E_STACK"])
MCP_URL = STACK["mcp_url"]
PRM_URL = STACK["prm_url"]
ISSUER = STACK["resource"]["issuer"]
RES_ID = STACK["resource"]["id"]
TOOLS = ["add_todo", "complete_todo", "delete_todo", "list_todos"]


def log(msg: str) -> None:
    print(f"[python-sdk] {msg}", file=sys.stderr, flush=True)


@dataclass
class Flow:
    """One client: the SDK provider wired to the shared browser helper, plus what happened."""

    name: str
    callbacks: CallbackServer
    storage: MemoryStorage = field(default_factory=MemoryStorage)
    authorization_urls: list[str] = field(default_factory=list)
    trace: list[dict] = field(default_factory=list)

    def provider(self) -> OAuthClientProvider:
        metadata = OAuthClientMetadata(
            client_name=f"moat-e2e python {self.name}",
            redirect_uris=[self.callbacks.redirect_uri],
            grant_types=["authorization_code", "refresh_token"],
            response_types=["code"],
            token_endpoint_auth_method="none",
        )
        return OAuthClientProvider(
            server_url=MCP_URL,
            client_metadata=metadata,
            storage=self.storage,
            redirect_handler=self.open_browser,
            callback_handler=self.wait_for_callback,
        )

    async def open_browser(self, url: str) -> None:
        """The SDK's redirect handler: the shared headless helper completes login and consent."""
        self.authorization_urls.append(url)
        result = await browse(STACK, url)
        assert result["pages"] == ["login", "consent"], result
        log(f"[{self.name}] browser: {result['pages']} → {result['finalUrl'].split('?')[0]}")

    async def wait_for_callback(self) -> AuthorizationCodeResult:
        return await self.callbacks.next_code()

    def http_client(self) -> httpx2.AsyncClient:
        async def record(response: httpx2.Response) -> None:
            request = response.request
            entry = {"method": request.method, "url": str(request.url), "status": response.status_code,
                     "www": response.headers.get("www-authenticate")}
            body = request.content or b""
            if body.startswith(b"{"):
                try:
                    msg = json.loads(body)
                    entry["rpc"] = msg.get("method")
                    if msg.get("method") == "tools/call":
                        entry["tool"] = msg["params"]["name"]
                except (ValueError, KeyError, TypeError):
                    pass
            elif b"grant_type=" in body:
                form = parse_qs(body.decode())
                entry["grant_type"] = form.get("grant_type", [None])[0]
                entry["resource"] = form.get("resource", [None])[0]
            self.trace.append(entry)

        return httpx2.AsyncClient(auth=self.provider(), event_hooks={"response": [record]},
                                  timeout=httpx2.Timeout(30, read=60))

    def format_trace(self, entries: list[dict] | None = None) -> str:
        lines = []
        for e in entries if entries is not None else self.trace:
            what = " ".join(str(x) for x in (e.get("rpc"), e.get("tool"), e.get("grant_type") and f"grant_type={e['grant_type']}") if x)
            www = f"  WWW-Authenticate: {e['www']}" if e.get("www") else ""
            lines.append(f"  {e['method']} {urlparse(e['url']).path}{f' ({what})' if what else ''} → {e['status']}{www}")
        return "\n".join(lines)


def assert_token(token: str, scope: str) -> dict:
    c = claims_of(token)
    assert c["iss"] == ISSUER, c
    assert c["aud"] == [MCP_URL, RES_ID], c
    assert c["scope"] == scope, f"scope {c['scope']!r}, expected {scope!r}"
    assert c["sub"].startswith("usr_"), c
    return c


def auth_url_params(url: str) -> dict[str, str]:
    u = urlparse(url)
    assert f"{u.scheme}://{u.netloc}{u.path}" == f"{ISSUER}/oauth/authorize", url
    return {k: v[0] for k, v in parse_qs(u.query).items()}


async def check_flow_and_step_up(callbacks: CallbackServer) -> list[str]:
    notes = []
    flow = Flow("main", callbacks)
    async with flow.http_client() as http:
        async with Client(streamable_http_client(MCP_URL, http_client=http)) as client:
            # ---- first authorization: DCR, login, consent, token, with the challenged scope ----
            first = flow.trace[0]
            assert first["status"] == 401, flow.format_trace()
            assert first["www"] == f'Bearer resource_metadata="{PRM_URL}", scope="todo:read"', first["www"]
            seen = [f"{e['method']} {urlparse(e['url']).path} {e['status']}" for e in flow.trace]
            for expected in ("GET /.well-known/oauth-protected-resource/mcp 200",
                             f"GET /.well-known/oauth-authorization-server/resources/{RES_ID} 200",
                             f"POST /resources/{RES_ID}/oauth/register 201",
                             f"POST /resources/{RES_ID}/oauth/token 200"):
                assert expected in seen, f"expected {expected} in the trace:\n{flow.format_trace()}"
            token_req = next(e for e in flow.trace if e.get("grant_type") == "authorization_code")
            assert token_req["resource"] == MCP_URL, token_req
            info = flow.storage.client_info
            assert info is not None and info.client_id.startswith("cli_"), info
            assert [str(u) for u in info.redirect_uris or []] == [callbacks.redirect_uri], info.redirect_uris
            assert len(flow.authorization_urls) == 1
            p = auth_url_params(flow.authorization_urls[0])
            assert p["scope"] == "todo:read", p
            assert p["resource"] == MCP_URL, p
            assert p["code_challenge_method"] == "S256", p
            tokens = flow.storage.tokens
            assert tokens is not None and tokens.token_type.lower() == "bearer", tokens
            assert tokens.refresh_token, "a refresh token (the client registered the refresh_token grant)"
            assert_token(tokens.access_token, "todo:read")
            notes.append(f"DCR {info.client_id}; authorized with scope todo:read through {len(flow.trace)} HTTP exchanges")

            tools = await client.list_tools()
            names = sorted(t.name for t in tools.tools)
            assert names == TOOLS, names
            listed = await client.call_tool("list_todos", {})
            assert not listed.is_error, listed
            assert listed.structured_content == {"todos": []}, listed.structured_content
            notes.append(f"tools/list {names}; list_todos → {listed.structured_content}")

            # ---- step-up: add_todo needs todo:write ----
            mark = len(flow.trace)
            added = await client.call_tool("add_todo", {"title": "from python"})
            steps = flow.trace[mark:]
            assert not added.is_error, f"{added}\n{flow.format_trace(steps)}"
            assert added.structured_content["todo"]["title"] == "from python", added.structured_content
            step_up = [e for e in steps if e["status"] == 403]
            assert len(step_up) == 1, flow.format_trace(steps)
            assert step_up[0]["www"] == (
                f'Bearer error="insufficient_scope", scope="todo:read todo:write", resource_metadata="{PRM_URL}", '
                'error_description="token lacks a scope this operation needs: todo:write"'), step_up[0]["www"]
            assert len(flow.authorization_urls) == 2, flow.authorization_urls
            p2 = auth_url_params(flow.authorization_urls[1])
            assert sorted(p2["scope"].split()) == ["todo:read", "todo:write"], p2
            assert p2["resource"] == MCP_URL, p2
            code2 = [e for e in steps if e.get("grant_type") == "authorization_code"]
            assert len(code2) == 1 and code2[0]["status"] == 200, flow.format_trace(steps)
            assert steps[-1]["status"] == 200 and steps[-1].get("tool") == "add_todo", flow.format_trace(steps)
            assert_token(flow.storage.tokens.access_token, "todo:read todo:write")
            log(f"step-up trace:\n{flow.format_trace(steps)}")

            listed = await client.call_tool("list_todos", {})
            assert [t["title"] for t in listed.structured_content["todos"]] == ["from python"], listed.structured_content
            todo_id = added.structured_content["todo"]["id"]
            deleted = await client.call_tool("delete_todo", {"id": todo_id})
            assert not deleted.is_error, deleted
            notes.append("403 insufficient_scope on add_todo → re-authorized for todo:read todo:write → add_todo, list_todos, delete_todo")
            protocol = getattr(client.session, "protocol_version", None)
            notes.append(f"negotiated protocol {protocol}; MCP requests: "
                         + ", ".join(sorted({e['rpc'] for e in flow.trace if e.get('rpc')})))
    return notes


async def main() -> int:
    started = time.monotonic()
    callbacks = CallbackServer()
    await callbacks.start()
    results: list[tuple[str, bool, list[str]]] = []
    try:
        for name, check in [("DCR, authorize, token, tools, step-up (todo:read → todo:write)", check_flow_and_step_up)]:
            t0 = time.monotonic()
            try:
                notes = await check(callbacks)
                results.append((f"{name} [{time.monotonic() - t0:.1f}s]", True, notes))
            except Exception as e:  # noqa: BLE001 - reported with context below
                results.append((f"{name} [{time.monotonic() - t0:.1f}s]", False, [f"{type(e).__name__}: {e}", traceback.format_exc()]))
    finally:
        await callbacks.close()
    print("\n=== Python MCP SDK client against todo-mcp + Moat: summary ===")
    for name, ok, notes in results:
        print(f"{'PASS' if ok else 'FAIL'} {name}")
        for n in notes:
            print("     " + n.replace("\n", "\n     "))
    failed = sum(1 for _, ok, _ in results if not ok)
    print(f"python-sdk: {'PASS' if not failed else 'FAIL'} in {time.monotonic() - started:.1f}s")
    print(f"{len(results) - failed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
