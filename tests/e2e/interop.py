"""Interop check (suite interop): validates Moat access tokens with PyJWT configured only with the JWKS URL, the issuer and the audience, as docs/protecting-typescript-and-python-servers.md shows.

Reads a JSON list on stdin: [{"alg", "token", "jwks_uri", "issuer", "audience"}, …] (written by
interop.test.mjs, which gets the tokens from a real Moat). For each token: it must validate, and
must be refused with another audience, another issuer, or after tampering. Prints one JSON line
per token and exits 1 if anything was wrong.
"""

from __future__ import annotations

import json
import sys

import jwt
from jwt import PyJWKClient


def validate(token: str, jwks: PyJWKClient, issuer: str, audience: str) -> dict:
    """What an MCP server written in Python does with a bearer token (see the docs)."""
    header = jwt.get_unverified_header(token)
    if header.get("typ", "").lower() not in ("at+jwt", "application/at+jwt"):  # RFC 9068 section 4
        raise jwt.InvalidTokenError(f"typ is {header.get('typ')!r}, not at+jwt")
    key = jwks.get_signing_key_from_jwt(token)  # by kid; refetches the JWKS on an unknown kid
    return jwt.decode(
        token,
        key=key,  # a PyJWK: its own algorithm (from the JWK) is the only one accepted
        issuer=issuer,
        audience=audience,
        leeway=30,
        options={"require": ["exp", "iat", "iss", "aud", "sub"]},
    )


def check(case: dict) -> dict:
    jwks = PyJWKClient(case["jwks_uri"], cache_keys=True)
    out: dict = {"alg": case["alg"], "problems": []}
    try:
        claims = validate(case["token"], jwks, case["issuer"], case["audience"])
        out["sub"] = claims["sub"]
        out["scope"] = claims.get("scope")
        out["key_alg"] = jwks.get_signing_key_from_jwt(case["token"]).algorithm_name
        if out["key_alg"] != case["alg"]:
            out["problems"].append(f"key algorithm {out['key_alg']}, expected {case['alg']}")
    except Exception as e:  # noqa: BLE001 - reported
        out["problems"].append(f"a valid token was refused: {type(e).__name__}: {e}")
        return out
    head, payload, sig = case["token"].split(".")
    tampered_sig = ("A" if sig[0] != "A" else "B") + sig[1:]
    for what, token, issuer, audience in [
        ("another audience", case["token"], case["issuer"], "http://127.0.0.1:1/other-mcp"),
        ("another issuer", case["token"], case["issuer"] + "x", case["audience"]),
        ("a tampered signature", f"{head}.{payload}.{tampered_sig}", case["issuer"], case["audience"]),
    ]:
        try:
            validate(token, jwks, issuer, audience)
            out["problems"].append(f"accepted with {what}")
        except jwt.InvalidTokenError as e:
            out.setdefault("refused", []).append(f"{what}: {type(e).__name__}")
    return out


def main() -> int:
    cases = json.load(sys.stdin)
    failed = 0
    for case in cases:
        result = check(case)
        failed += bool(result["problems"])
        print(json.dumps(result), flush=True)
    return 1 if failed or not cases else 0


if __name__ == "__main__":
    sys.exit(main())
