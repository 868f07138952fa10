"""Tokens a platform mints for its own users (citelink.identity.platform_tokens): HS256,
RS256 and ES256, provisioning on first use, `aud`/`iss`, every attack."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import hmac
import json
import math
import time
from pathlib import Path
from urllib.parse import quote

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from citelink.identity import tokens
from citelink.identity.platform_tokens import TOO_LONG
from citelink.problems import Problem
from citelink.server.app import create_app
from tests.support.data import SECRET_KEY, subscribe
from tests.support.world import _b64, _hmac_signed
from tests.support.wsclient import open_socket, serving

# HS512 below is signed with a key short for it, on purpose.
pytestmark = pytest.mark.filterwarnings("ignore::jwt.warnings.InsecureKeyLengthWarning")

PLATFORM_SECRET = "the-platform-shared-secret-of-sufficient-length"


def _pem(private) -> str:
    return (
        private.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


@pytest.fixture(scope="module")
def rsa_key():
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def ec_key():
    return ec.generate_private_key(ec.SECP256R1())


def mint(key, alg: str = "HS256", headers: dict | None = None, **changes) -> str:
    """A platform token for external id "42", valid ten minutes, changed by `changes`
    (a None value drops the claim)."""
    now = int(time.time())
    claims = {"sub": "42", "iat": now, "exp": now + 600, **changes}
    claims = {k: v for k, v in claims.items() if v is not None}
    return jwt.encode(claims, key, algorithm=alg, headers=headers)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def keys_file(tmp_path: Path, rsa_key, ec_key) -> Path:
    """A PEM file with both public keys."""
    path = tmp_path / "platform.pem"
    path.write_text(_pem(rsa_key) + _pem(ec_key))
    return path


@pytest.fixture
async def platform(settings, keys_file):
    """A server that takes the platform's HS256 secret and its two public keys."""
    changed = dict(platform_token_secret=PLATFORM_SECRET, platform_public_keys=keys_file)
    async with serving(settings, **changed) as server:
        yield server


async def me(server, token: str) -> httpx.Response:
    async with httpx.AsyncClient(base_url=server.http) as http:
        return await http.get("/api/users/me/", headers=bearer(token))


async def test_hs256_rs256_es256_sign_in_and_provision_once(platform, conn, rsa_key, ec_key):
    answers = [
        await me(platform, mint(PLATFORM_SECRET)),
        await me(platform, mint(rsa_key, "RS256")),
        await me(platform, mint(ec_key, "ES256")),
    ]
    assert [r.status_code for r in answers] == [200, 200, 200]
    assert {r.json()["id"] for r in answers} == {answers[0].json()["id"]}
    assert answers[0].json()["username"] == "ext.42"
    row = await conn.fetchrow("SELECT * FROM users WHERE external_id = '42'")
    assert (row["is_staff"], row["is_active"], row["password_hash"]) == (False, True, "!")
    # An external id that is no username is named by its hash.
    r = await me(platform, mint(PLATFORM_SECRET, sub="user 7/ä"))
    assert r.status_code == 200 and r.json()["username"].startswith("ext.")
    assert await conn.fetchval("SELECT count(*) FROM users") == 2


async def test_a_jwks_file_is_read_and_kid_picks_the_key(settings, tmp_path, rsa_key, conn):
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwks = {"keys": []}
    for kid, key in (("old", other), ("new", rsa_key)):
        jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
        jwks["keys"].append({**jwk, "kid": kid, "use": "sig"})
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps(jwks))
    async with serving(settings, platform_public_keys=path) as server:
        assert (await me(server, mint(rsa_key, "RS256", headers={"kid": "new"}))).status_code == 200
        assert (await me(server, mint(rsa_key, "RS256", headers={"kid": "old"}))).status_code == 401
        # No kid: any key of the type may have signed it.
        assert (await me(server, mint(rsa_key, "RS256"))).status_code == 200
        # Without a secret configured, HS256 is no platform algorithm at all.
        assert (await me(server, mint(PLATFORM_SECRET))).status_code == 401


async def test_audience_and_issuer_are_checked_when_configured(settings, keys_file, rsa_key):
    changed = dict(
        platform_public_keys=keys_file,
        platform_audience="citelink",
        platform_issuer="https://platform.example",
    )
    good = {"aud": "citelink", "iss": "https://platform.example"}
    async with serving(settings, **changed) as server:
        assert (await me(server, mint(rsa_key, "RS256", **good))).status_code == 200
        for label, claims in {
            "no aud": {**good, "aud": None},
            "wrong aud": {**good, "aud": "another-service"},
            "no iss": {**good, "iss": None},
            "wrong iss": {**good, "iss": "https://evil.example"},
        }.items():
            r = await me(server, mint(rsa_key, "RS256", **claims))
            assert (r.status_code, r.json()) == (401, {"detail": "token is invalid or expired"}), (
                label
            )


def platform_attacks(rsa_key, ec_key) -> dict[str, str]:
    now = int(time.time())
    claims = {"sub": "42", "iat": now, "exp": now + 600}
    pem = _pem(rsa_key)
    other_rsa = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    p384 = ec.generate_private_key(ec.SECP384R1())
    return {
        "alg none": f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{_b64(claims)}.",
        # Key-type confusion: the public key's PEM used as an HMAC secret.
        "HS256 signed with the public PEM": _hmac_signed({"alg": "HS256"}, claims, pem),
        "RS256 header, HMAC of the PEM": _hmac_signed({"alg": "RS256"}, claims, pem),
        "ES256 header, HMAC of the secret": _hmac_signed({"alg": "ES256"}, claims, PLATFORM_SECRET),
        # A header is any JSON: an `alg` that is no string names no key.
        "alg a list": _hmac_signed({"alg": ["RS256"]}, claims, PLATFORM_SECRET),
        "HS512 with the secret": mint(PLATFORM_SECRET, "HS512"),
        "RS512 with the key": mint(rsa_key, "RS512"),
        "ES384 with a P-384 key": mint(p384, "ES384"),
        "PS256 with the key": mint(rsa_key, "PS256"),
        "wrong secret": mint("another-platform-secret-of-sufficient-length"),
        "another RSA key": mint(other_rsa, "RS256"),
        "citelink's secret, no token_type": mint(SECRET_KEY),
        "platform secret, citelink claims": jwt.encode(
            {
                "token_type": "access",
                "user_id": 1,
                "iat": now,
                "exp": now + 600,
                "jti": "0" * 32,
                "gen": 0,
            },
            PLATFORM_SECRET,
        ),
        "platform claims plus token_type": mint(PLATFORM_SECRET, token_type="access"),
        "expired": mint(PLATFORM_SECRET, exp=now - 10),
        "no exp": mint(PLATFORM_SECRET, exp=None),
        "no iat": mint(PLATFORM_SECRET, iat=None),
        "lives 61 minutes": mint(PLATFORM_SECRET, exp=now + 61 * 60),
        "issued long ago, valid a while": mint(rsa_key, "RS256", iat=now - 86400),
        "issued in the future (iat)": mint(PLATFORM_SECRET, iat=now + 600),
        "not yet valid (nbf)": mint(PLATFORM_SECRET, nbf=now + 600),
        "no sub": mint(PLATFORM_SECRET, sub=None),
        "sub a number": mint(ec_key, "ES256", sub=42),
        "sub empty": mint(PLATFORM_SECRET, sub=""),
        "sub too long": mint(PLATFORM_SECRET, sub="x" * 256),
        "sub with a control character": mint(PLATFORM_SECRET, sub="4\n2"),
        "garbage": "not-a-token",
        "three dots": "a.b.c",
    }


async def test_every_attack_is_refused_on_rest_and_socket(platform, conn, rsa_key, ec_key):
    wrong = []
    attacks = platform_attacks(rsa_key, ec_key)
    async with httpx.AsyncClient(base_url=platform.http) as http:
        for label, token in attacks.items():
            r = await http.get("/api/users/me/", headers=bearer(token))
            if r.status_code != 401 or not r.json().get("detail"):
                wrong.append(f"REST {label}: {r.status_code} {r.text}")
    for label in ("alg none", "HS256 signed with the public PEM", "issued in the future (iat)"):
        async with open_socket(platform, attacks[label]) as ws:
            if (code := await ws.close_code()) != 4401:
                wrong.append(f"socket {label}: {code}")
    assert wrong == []
    # Nothing was provisioned by any of them.
    assert await conn.fetchval("SELECT count(*) FROM users") == 0


async def test_citelink_tokens_still_work_beside_platform_tokens(platform, make_user):
    alice = await make_user("alice")
    r = await me(platform, alice.token)
    assert r.json()["username"] == "alice"
    # A platform-signed token naming alice's citelink id is not one of citelink's.
    forged = tokens.issue(PLATFORM_SECRET, alice.id, "access", 5)
    assert (await me(platform, forged)).status_code == 401


async def test_platform_tokens_are_refused_without_a_platform(server, make_user):
    assert (await me(server, mint(PLATFORM_SECRET))).status_code == 401


async def test_provisioning_off_refuses_unknown_ids_but_takes_known_ones(settings, conn):
    async with serving(
        settings, platform_token_secret=PLATFORM_SECRET, platform_provisioning=False
    ) as server:
        r = await me(server, mint(PLATFORM_SECRET))
        assert r.json() == {"detail": "no user has this token's external id"}
        assert await conn.fetchval("SELECT count(*) FROM users") == 0
        await conn.execute(
            "INSERT INTO users (username, password_hash, external_id) VALUES ('carol', '!', '42')"
        )
        assert (await me(server, mint(PLATFORM_SECRET))).json()["username"] == "carol"


async def test_deactivation_refuses_platform_tokens_and_closes_sockets(platform, conn):
    token = mint(PLATFORM_SECRET)
    assert (await me(platform, token)).status_code == 200
    async with open_socket(platform, token) as ws:
        assert await ws.request("ping") == {"type": "pong"}
        await conn.execute("UPDATE users SET is_active = false WHERE external_id = '42'")
        assert await ws.close_code() == 4401
    r = await me(platform, token)
    assert (r.status_code, r.json()) == (401, {"detail": "user is inactive or deleted"})
    async with open_socket(platform, token) as ws:
        assert await ws.close_code() == 4401
        assert ws.connection.close_reason == "user is inactive or deleted"
    # Active again: the tokens of before stay revoked, as citelink's do.
    await conn.execute("UPDATE users SET is_active = true WHERE external_id = '42'")
    r = await me(platform, token)
    assert (r.status_code, r.json()) == (401, {"detail": "token has been revoked"})
    await past_revocation(conn)
    assert (await me(platform, mint(PLATFORM_SECRET))).status_code == 200


async def past_revocation(conn, external_id: str = "42") -> None:
    """Wait until a token minted now is issued after the user's tokens were
    last revoked (`iat` counts whole seconds)."""
    cutoff = await conn.fetchval(
        "SELECT extract(epoch FROM tokens_valid_after)::float8 FROM users WHERE external_id = $1",
        external_id,
    )
    await asyncio.sleep(max(0.0, math.floor(cutoff) + 1 - time.time()))


async def test_sign_out_everywhere_revokes_platform_tokens_and_closes_their_sockets(platform, conn):
    token = mint(PLATFORM_SECRET)
    async with httpx.AsyncClient(base_url=platform.http) as http:
        assert (await http.get("/api/users/me/", headers=bearer(token))).status_code == 200
        async with open_socket(platform, token) as ws, open_socket(platform, token) as other:
            assert await ws.request("ping") == {"type": "pong"}
            assert await other.request("ping") == {"type": "pong"}
            r = await http.post("/api/token/revoke-all/", headers=bearer(token))
            assert r.status_code == 204
            for socket in (ws, other):
                assert await socket.close_code() == 4401
                assert socket.connection.close_reason == "token has been revoked"
        r = await http.get("/api/users/me/", headers=bearer(token))
        assert (r.status_code, r.json()) == (401, {"detail": "token has been revoked"})
        # Minted again in the same second: refused too (the platform may not
        # tell which of the two came first).
        r = await http.get("/api/users/me/", headers=bearer(mint(PLATFORM_SECRET)))
        assert r.status_code == 401
    async with open_socket(platform, token) as ws:
        assert await ws.close_code() == 4401
        assert ws.connection.close_reason == "token has been revoked"
    await past_revocation(conn)
    fresh = mint(PLATFORM_SECRET)
    assert (await me(platform, fresh)).status_code == 200
    async with open_socket(platform, fresh) as ws:
        assert await ws.request("ping") == {"type": "pong"}
        # An auth frame with a token of before is refused; the socket stays.
        answer = await ws.request("auth", token=token)
        assert (answer["code"], answer["detail"]) == ("invalid_token", "the token has been revoked")
        # A new password (plain SQL) revokes them as well.
        await conn.execute("UPDATE users SET password_hash = 'new' WHERE external_id = '42'")
        assert await ws.close_code() == 4401
    r = await me(platform, fresh)
    assert (r.status_code, r.json()) == (401, {"detail": "token has been revoked"})


async def test_a_platform_token_opens_a_socket_and_renews_it(platform, conn):
    now = int(time.time())
    short = mint(PLATFORM_SECRET, exp=now + 2)
    async with open_socket(platform, short) as ws:
        user_id = await conn.fetchval("SELECT id FROM users WHERE external_id = '42'")
        tag = await subscribe(conn, user_id, "news")
        await conn.execute("INSERT INTO notification (tag_id, message) VALUES ($1, 'hi')", tag)
        frames = await ws.recv_until("counts")
        assert [f["message"] for f in frames if f["type"] == "notification"] == ["hi"]
        fresh = mint(PLATFORM_SECRET, exp=now + 600)
        assert await ws.request("auth", token=fresh) == {"type": "auth", "expires_at": now + 600}
        other = mint(PLATFORM_SECRET, sub="43")
        answer = await ws.request("auth", token=other)
        assert answer["detail"] == "the token belongs to another user"
        # Past the first token's expiry, the renewed one applies.
        await asyncio.sleep(max(0.0, now + 2.3 - time.time()))
        assert await ws.request("ping") == {"type": "pong"}


async def test_publish_to_external_ids(platform, conn, make_user):
    staff = await make_user("admin", staff=True)
    async with httpx.AsyncClient(base_url=platform.http, headers=staff.headers) as http:
        r = await http.post("/api/notifications/", json={"message": "hi", "users": ["ext:42"]})
        assert (r.status_code, r.json()["recipients"]) == (201, 1)
        # The user was made by the publish: their first sign-in finds the item.
        async with httpx.AsyncClient(base_url=platform.http) as user:
            inbox = await user.get("/api/inbox/", headers=bearer(mint(PLATFORM_SECRET)))
        assert [i["message"] for i in inbox.json()["results"]] == ["hi"]
        tag = (await http.post("/api/tags/", json={"name": "orders"})).json()["id"]
        r = await http.post("/api/subscriptions/", json={"user": "ext:42", "tag": tag})
        assert r.status_code == 201
        for bad in (["ext:"], ["42x"], [f"ext:{'x' * 256}"], ["ext:a\u0000"]):
            r = await http.post("/api/notifications/", json={"message": "m", "users": bad})
            assert r.status_code == 422 and "users" in r.json()["errors"], bad


async def test_with_provisioning_off_no_route_makes_users_and_unknown_ids_are_named(
    settings, make_user, conn
):
    staff = await make_user("admin", staff=True)
    await conn.execute(
        "INSERT INTO users (username, password_hash, external_id) VALUES ('carol', '!', 'c')"
    )
    async with (
        serving(settings, platform_provisioning=False) as server,
        httpx.AsyncClient(base_url=server.http, headers=staff.headers) as http,
    ):
        body = {"message": "hi", "users": ["ext:c", "ext:nobody", "ext:ghost"]}
        r = await http.post("/api/notifications/", json=body)
        assert (r.status_code, r.json()) == (
            422,
            {
                "detail": "invalid request body",
                "errors": {
                    "users": "no such external ids: ext:nobody, ext:ghost "
                    "(CITELINK_PLATFORM_PROVISIONING is off: no user is made for them)"
                },
            },
        )
        r = await http.post("/api/notifications/", json={"message": "hi", "users": ["ext:c"]})
        assert r.json()["recipients"] == 1
        r = await http.post("/api/subscriptions/", json={"user": "ext:nobody", "tag": 1})
        assert r.status_code == 422 and "ext:nobody" in r.json()["errors"]["user"]
        # Nor does the route made for it: it finds the known ones only.
        body = {"external_ids": ["ext:c", "ext:nobody"]}
        r = await http.post("/api/users/external/", json=body)
        assert (r.status_code, r.json()["errors"]) == (
            422,
            {
                "external_ids": "no such external ids: ext:nobody "
                "(CITELINK_PLATFORM_PROVISIONING is off: no user is made for them)"
            },
        )
        r = await http.post("/api/users/external/", json={"external_ids": ["ext:c"]})
        assert [u["username"] for u in r.json()["users"]] == ["carol"]
        assert await conn.fetchval("SELECT count(*) FROM users") == 2


def test_bad_platform_settings_stop_the_start(settings, tmp_path):
    def start(**changes):
        create_app(dataclasses.replace(settings, **changes))

    with pytest.raises(Problem, match="must differ from CITELINK_SECRET_KEY"):
        start(platform_token_secret=SECRET_KEY)
    with pytest.raises(Problem, match="cannot read"):
        start(platform_public_keys=tmp_path / "missing.pem")
    (tmp_path / "junk.pem").write_text("not a key")
    with pytest.raises(Problem, match="holds no public key"):
        start(platform_public_keys=tmp_path / "junk.pem")
    private = ec.generate_private_key(ec.SECP256R1())
    jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(private))
    (tmp_path / "private.json").write_text(json.dumps({"keys": [jwk]}))
    with pytest.raises(Problem, match="private key"):
        start(platform_public_keys=tmp_path / "private.json")


def _raw_token(header: bytes, payload: bytes, secret: str = PLATFORM_SECRET) -> str:
    """A token of these exact header and payload bytes, HMAC-SHA256 signed with
    `secret` whatever they say."""
    signing_input = f"{_b64(header)}.{_b64(payload)}"
    signature = hmac.new(secret.encode(), signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{_b64(signature)}"


def malformed_tokens() -> dict[str, str]:
    """Tokens whose header or claims are of the wrong shape, each signed with
    the platform's secret (or citelink's) so that every check is reached."""
    now = int(time.time())
    claims = json.dumps({"sub": "42", "iat": now, "exp": now + 600}).encode()
    ours = json.dumps(
        {"token_type": "access", "user_id": 1, "iat": now, "exp": now + 600, "jti": "0", "gen": 0}
    ).encode()
    headers = {
        "alg a list": b'{"alg": ["HS256"]}',
        "alg an object": b'{"alg": {"HS256": true}}',
        "alg null": b'{"alg": null}',
        "alg a number": b'{"alg": 256}',
        "no alg": b'{"typ": "JWT"}',
        "kid a list": b'{"alg": "HS256", "kid": ["a"]}',
        "kid an object, RS256": b'{"alg": "RS256", "kid": {"a": 1}}',
        "kid a number, ES256": b'{"alg": "ES256", "kid": 7}',
        "crit": b'{"alg": "HS256", "crit": ["exp"]}',
        "b64 false": b'{"alg": "HS256", "b64": false}',
        "header a list": b'["HS256"]',
        "header a string": b'"HS256"',
        "header null": b"null",
        "header a number": b"1",
        "header cut short": b'{"alg": "HS256"',
        "header NaN": b'{"alg": NaN}',
        "header not UTF-8": b'{"alg": "HS256\xff"}',
        "header deeply nested": b'{"alg": "HS256", "x": ' + b"[" * 5000 + b"]" * 5000 + b"}",
    }
    tokens_ = {label: _raw_token(header, claims) for label, header in headers.items()}
    tokens_["citelink claims, alg a list"] = _raw_token(b'{"alg": ["HS256"]}', ours, SECRET_KEY)
    tokens_["citelink claims, alg an object"] = _raw_token(b'{"alg": {}}', ours, SECRET_KEY)
    hs256 = b'{"alg": "HS256"}'
    payloads = {
        "claims a list": b"[1, 2]",
        "claims a string": b'"sub"',
        "claims null": b"null",
        "iat a string": b'{"sub": "42", "iat": "%d", "exp": %d}' % (now, now + 600),
        "exp a string": b'{"sub": "42", "iat": %d, "exp": "%d"}' % (now, now + 600),
        "exp a list": b'{"sub": "42", "iat": %d, "exp": [%d]}' % (now, now + 600),
        "exp true": b'{"sub": "42", "iat": %d, "exp": true}' % now,
        "iat true": b'{"sub": "42", "iat": true, "exp": %d}' % (now + 600),
        "exp NaN": b'{"sub": "42", "iat": %d, "exp": NaN}' % now,
        "exp Infinity": b'{"sub": "42", "iat": %d, "exp": Infinity}' % now,
        "exp 1e400": b'{"sub": "42", "iat": %d, "exp": 1e400}' % now,
        # Valid times, but a lifetime past CITELINK_PLATFORM_TOKEN_MAX_MINUTES.
        "exp 10^30": b'{"sub": "42", "iat": %d, "exp": 1%s}' % (now, b"0" * 30),
        "exp 10^400": b'{"sub": "42", "iat": %d, "exp": 1%s}' % (now, b"0" * 400),
        "iat -10^30": b'{"sub": "42", "iat": -1%s, "exp": %d}' % (b"0" * 30, now + 600),
        "nbf a string": b'{"sub": "42", "iat": %d, "exp": %d, "nbf": "x"}' % (now, now + 600),
        "sub a list": b'{"sub": ["42"], "iat": %d, "exp": %d}' % (now, now + 600),
        "sub an object": b'{"sub": {"id": "42"}, "iat": %d, "exp": %d}' % (now, now + 600),
    }
    tokens_ |= {label: _raw_token(hs256, payload) for label, payload in payloads.items()}
    signed = _raw_token(hs256, claims)
    tokens_ |= {
        "two segments": signed.rsplit(".", 1)[0],
        "four segments": signed + ".x",
        "empty segments": "..",
        "a dot": ".",
        "not base64": "@@@." + signed.split(".", 1)[1],
        "signature not base64": signed.rsplit(".", 1)[0] + ".@@@",
        "bytes past the end": signed + "%00",
        "a space inside": signed[:10] + " " + signed[10:],
    }
    return tokens_


@pytest.mark.parametrize("configured", ["platform", "no platform"])
async def test_a_malformed_token_is_a_401_never_a_500(settings, keys_file, make_user, configured):
    alice = await make_user("alice")
    changes = {"platform_token_secret": PLATFORM_SECRET, "platform_public_keys": keys_file}
    wrong = []
    async with (
        serving(settings, **(changes if configured == "platform" else {})) as server,
        httpx.AsyncClient(base_url=server.http) as http,
    ):
        attacks = malformed_tokens()
        for label, token in attacks.items():
            r = await http.get("/api/users/me/", headers=bearer(token))
            if r.status_code != 401 or not r.json().get("detail"):
                wrong.append(f"REST {label}: {r.status_code} {r.text[:200]}")
            r = await http.post("/api/token/verify/", json={"token": token})
            if r.status_code not in (401, 422):
                wrong.append(f"verify {label}: {r.status_code} {r.text[:200]}")
        async with open_socket(server, alice.token) as ws:
            for label, token in attacks.items():
                answer = await ws.request("auth", token=token)
                if answer.get("code") != "invalid_token":
                    wrong.append(f"auth frame {label}: {answer}")
            assert await ws.request("ping") == {"type": "pong"}
        for label in ("alg a list", "header a list", "exp a string", "exp NaN", "iat true"):
            async with open_socket(server, quote(attacks[label])) as ws:
                if (code := await ws.close_code()) != 4401:
                    wrong.append(f"socket {label}: {code}")
    assert wrong == []


async def test_platform_token_lifetime_is_capped(settings, make_user):
    """exp - iat at most CITELINK_PLATFORM_TOKEN_MAX_MINUTES, whatever exp says."""
    alice = await make_user("alice")
    # Every token's iat is this `now`: the seconds the server takes to start
    # must not shorten a lifetime meant to be one second too long.
    now = int(time.time())
    too_long = {"detail": TOO_LONG}
    async with (
        serving(
            settings, platform_token_secret=PLATFORM_SECRET, platform_token_max_minutes=5
        ) as server,
    ):
        assert (await me(server, mint(PLATFORM_SECRET, iat=now, exp=now + 300))).status_code == 200
        # Issued a while ago, still within its five minutes: taken.
        ok = mint(PLATFORM_SECRET, iat=now - 200, exp=now + 100)
        assert (await me(server, ok)).status_code == 200
        r = await me(server, mint(PLATFORM_SECRET, iat=now, exp=now + 301))
        assert (r.status_code, r.json()) == (401, too_long)
        r = await me(server, mint(PLATFORM_SECRET, iat=now - 400, exp=now + 100))
        assert (r.status_code, r.json()) == (401, too_long)
        r = await me(server, mint(PLATFORM_SECRET, iat=None, exp=now + 60))
        assert (r.status_code, r.json()) == (401, {"detail": "token is invalid or expired"})
        async with open_socket(server, mint(PLATFORM_SECRET, iat=now, exp=now + 3600)) as ws:
            assert await ws.close_code() == 4401
            assert ws.connection.close_reason == TOO_LONG
        async with open_socket(server, alice.token) as ws:
            answer = await ws.request("auth", token=mint(PLATFORM_SECRET, iat=now, exp=now + 3600))
            assert (answer["code"], answer["detail"]) == ("invalid_token", TOO_LONG)
