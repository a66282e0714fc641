"""A small MCP server written in Python (MCP Python SDK 2.x, MCPServer) protected by Moat with PyJWT: the complete, tested version of docs/protecting-typescript-and-python-servers.md (the `other_servers` e2e suite runs it against a real Moat).

Run: tests/e2e/.venv/bin/python tests/e2e/servers/py_todo_server.py  with
  MCP_URL        the exact URL registered with `moat resource create --server-url` (e.g. http://127.0.0.1:3002/mcp)
  MOAT_ISSUER    the resource's issuer (`issuer` of `moat resource create --json`)
  MOAT_JWKS_URL  Moat's key set ({MOAT_PUBLIC_URL}/keys)
  PORT           where to listen on 127.0.0.1 (default: the port of MCP_URL)
"""

from __future__ import annotations

import json
import os
from urllib.parse import urlparse

import anyio.to_thread
import jwt
import uvicorn
from mcp.server.auth.middleware.auth_context import get_access_token
from mcp.server.auth.provider import AccessToken
from mcp.server.auth.settings import AuthSettings
from mcp.server.mcpserver import MCPServer

MCP_URL = os.environ["MCP_URL"]
ISSUER = os.environ["MOAT_ISSUER"]
JWKS_URL = os.environ["MOAT_JWKS_URL"]
PORT = int(os.environ.get("PORT") or urlparse(MCP_URL).port)

# ---- 1. Token validation: only the key set URL, the issuer and the audience -------------------
jwks = jwt.PyJWKClient(JWKS_URL, cache_keys=True)  # caches keys, refetches on an unknown kid


def validate(token: str) -> dict:
    header = jwt.get_unverified_header(token)
    if header.get("typ", "").lower() not in ("at+jwt", "application/at+jwt"):  # RFC 9068 section 4
        raise jwt.InvalidTokenError("not an access token")
    key = jwks.get_signing_key_from_jwt(token)  # a PyJWK: only its own algorithm is accepted
    return jwt.decode(token, key=key, issuer=ISSUER, audience=MCP_URL, leeway=30,
                      options={"require": ["exp", "iat", "iss", "aud", "sub"]})


class MoatTokenVerifier:
    """The SDK's TokenVerifier: a valid Moat token becomes an AccessToken, anything else None (401)."""

    async def verify_token(self, token: str) -> AccessToken | None:
        try:
            claims = await anyio.to_thread.run_sync(validate, token)  # PyJWKClient fetches with urllib
        except (jwt.InvalidTokenError, jwt.PyJWKClientError):
            return None
        return AccessToken(token=token, client_id=claims["client_id"], scopes=claims.get("scope", "").split(),
                           expires_at=claims["exp"], resource=MCP_URL, subject=claims["sub"], claims=claims)


# ---- 2. Scopes: what each tool needs, and write implies read ---------------------------------
TOOL_SCOPES = {"list_todos": {"todo:read"}, "add_todo": {"todo:write"}}
IMPLIES = {"todo:write": {"todo:read"}}
OUR_SCOPES = {"todo:read", "todo:write"}


def effective(granted: list[str]) -> set[str]:
    return set(granted).union(*(IMPLIES.get(s, set()) for s in granted))


# ---- 3. The MCP server; the SDK serves the metadata and the 401 challenge --------------------
verifier = MoatTokenVerifier()
mcp = MCPServer(
    "todo-py",
    token_verifier=verifier,
    auth=AuthSettings(
        issuer_url=ISSUER,  # published as authorization_servers in the metadata
        resource_server_url=MCP_URL,
        required_scopes=["todo:read"],  # every request needs it; also the metadata's scopes_supported
        validate_token_resource=True,
    ),
)
todos: dict[tuple[str, str], list[dict]] = {}


def owner() -> tuple[str, str]:
    token = get_access_token()  # the verified token of the current request
    assert token is not None and token.claims is not None
    return token.claims["iss"], token.claims["sub"]


@mcp.tool(description="List your todos. Needs todo:read.")
def list_todos() -> dict:
    return {"todos": todos.get(owner(), [])}


@mcp.tool(description="Add a todo. Needs todo:write.")
def add_todo(title: str) -> dict:
    if "todo:write" not in effective(get_access_token().scopes):  # defence in depth; StepUp answers first
        raise ValueError("needs todo:write")
    items = todos.setdefault(owner(), [])
    todo = {"id": len(items) + 1, "title": title}
    items.append(todo)
    return {"todo": todo}


# ---- 4. Step-up: 403 insufficient_scope for a tool the token's scopes do not cover -----------
class StepUp:
    """ASGI middleware in front of the SDK app: reads the JSON-RPC body of POST /mcp and answers
    `403 … error="insufficient_scope", scope="<everything the call needs>"` before the SDK runs
    the tool. Requests without a valid token pass through: the SDK answers them with 401."""

    def __init__(self, app, path: str) -> None:
        self.app = app
        self.path = path
        self.prm_url = f"{urlparse(MCP_URL).scheme}://{urlparse(MCP_URL).netloc}/.well-known/oauth-protected-resource{path}"

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or scope["path"] != self.path:
            return await self.app(scope, receive, send)
        body, more = b"", True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        replayed = False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        auth = dict(scope["headers"]).get(b"authorization", b"").decode()
        token = await verifier.verify_token(auth[7:]) if auth[:7].lower() == "bearer " else None
        try:
            msg = json.loads(body)
        except ValueError:
            msg = None
        if token is not None and isinstance(msg, dict) and msg.get("method") == "tools/call":
            needed = TOOL_SCOPES.get((msg.get("params") or {}).get("name"), set())
            if not needed <= effective(token.scopes):
                wanted = " ".join(sorted(needed | (set(token.scopes) & OUR_SCOPES)))
                challenge = (f'Bearer error="insufficient_scope", scope="{wanted}", '
                             f'resource_metadata="{self.prm_url}", error_description="token lacks a scope this tool needs"')
                payload = json.dumps({"error": "insufficient_scope"}).encode()
                await send({"type": "http.response.start", "status": 403,
                            "headers": [(b"content-type", b"application/json"), (b"www-authenticate", challenge.encode()),
                                        (b"content-length", str(len(payload)).encode())]})
                return await send({"type": "http.response.body", "body": payload})
        return await self.app(scope, replay, send)


path = urlparse(MCP_URL).path
app = StepUp(mcp.streamable_http_app(streamable_http_path=path, stateless_http=True, host="127.0.0.1"), path)

if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=PORT, log_level="warning")
