"""What the Python SDK suites (python-sdk.py, cimd-python-sdk.py) share: decoding token claims, an in-memory TokenStorage that records what the SDK saved, a loopback callback server, the shared headless browser helper, and turning a callback URL into the SDK's AuthorizationCodeResult."""

from __future__ import annotations

import asyncio
import base64
import json
from urllib.parse import parse_qs, urlparse

from mcp.shared.auth import AuthorizationCodeResult, OAuthClientInformationFull, OAuthToken


def claims_of(token: str) -> dict:
    """The (unverified) claims of a JWT, for assertions about what Moat issued."""
    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


class MemoryStorage:
    """The SDK's TokenStorage, in memory, remembering every token set and client info it saved."""

    def __init__(self) -> None:
        self.tokens: OAuthToken | None = None
        self.client_info: OAuthClientInformationFull | None = None
        self.saved: list[OAuthToken] = []
        self.saved_client_infos: list[OAuthClientInformationFull] = []

    async def get_tokens(self) -> OAuthToken | None:
        return self.tokens

    async def set_tokens(self, tokens: OAuthToken) -> None:
        self.tokens = tokens
        self.saved.append(tokens)

    async def get_client_info(self) -> OAuthClientInformationFull | None:
        return self.client_info

    async def set_client_info(self, client_info: OAuthClientInformationFull) -> None:
        self.client_info = client_info
        self.saved_client_infos.append(client_info)


class CallbackServer:
    """A loopback server receiving the authorization redirects, any number of them, in order."""

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

    async def next_code(self) -> AuthorizationCodeResult:
        """The next redirect, as the SDK's callback handler returns it (an error fails the test)."""
        url = await asyncio.wait_for(self.queue.get(), timeout=30)
        q = parse_qs(urlparse(url).query)
        assert "error" not in q, f"authorization error at the callback: {url}"
        return AuthorizationCodeResult(code=q["code"][0], state=q.get("state", [None])[0], iss=q.get("iss", [None])[0])

    async def close(self) -> None:
        if self.server:
            self.server.close()
            await self.server.wait_closed()


async def browse(stack: dict, url: str) -> dict:
    """Completes login and consent at `url` with the shared headless helper (browser/authorize.mjs);
    returns its result (`finalUrl`, `pages`, `consentText`)."""
    proc = await asyncio.create_subprocess_exec(
        stack["node"], stack["browser_helper"], "--url", url, "--email", stack["email"], "--password", stack["password"],
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=90)
    if proc.returncode != 0:
        raise AssertionError(f"browser helper failed ({proc.returncode}):\n{err.decode()}")
    return json.loads(out.decode().strip().splitlines()[-1])
