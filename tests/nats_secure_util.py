"""Secured nats-servers for the tests: certificates (trustme), NKEYs and JWTs (nkeys), config files.

Everything is generated per test in a temporary directory: a private CA and a
server certificate for 127.0.0.1, client certificates for mutual TLS, NKEY
users, and an operator → account → user chain of JWTs for operator mode with a
memory resolver (what ``nsc`` would make, written here from the JWT format:
``base64url(header).base64url(claims).base64url(ed25519 signature)``).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import ssl
import tempfile
import time
from pathlib import Path
from typing import Any

import nacl.signing
import nkeys
import trustme
from nats_util import NatsServer

__all__ = ["Identity", "Operator", "Secrets", "creds_text", "jwt"]


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class Identity:
    """One NKEY: seed (``S...``), public key (``U...``/``A...``/``O...``), and a signer."""

    def __init__(self, prefix: int) -> None:
        raw = bytes(nacl.signing.SigningKey.generate())
        self.seed: str = nkeys.encode_seed(raw, prefix).decode()
        self._keys = nkeys.from_seed(self.seed.encode())
        self.public: str = self._keys.public_key.decode()

    def sign(self, data: bytes) -> bytes:
        return self._keys.sign(data)


def jwt(claims_nats: dict[str, Any], subject: Identity, issuer: Identity, **extra: Any) -> str:
    """A NATS JWT for *subject*, signed by *issuer*."""
    claims: dict[str, Any] = {
        "iat": int(time.time()),
        "iss": issuer.public,
        "name": f"test-{claims_nats['type']}",
        "sub": subject.public,
        "nats": {**claims_nats, "version": 2},
        **extra,
    }
    claims["jti"] = (
        base64.b32encode(hashlib.sha256(json.dumps(claims).encode()).digest()).decode().rstrip("=")
    )
    head = _b64(json.dumps({"typ": "JWT", "alg": "ed25519-nkey"}).encode())
    body = _b64(json.dumps(claims).encode())
    return f"{head}.{body}.{_b64(issuer.sign(f'{head}.{body}'.encode()))}"


def creds_text(user_jwt: str, seed: str) -> str:
    """A ``.creds`` file as ``nsc generate creds`` writes it."""
    return (
        f"-----BEGIN NATS USER JWT-----\n{user_jwt}\n------END NATS USER JWT------\n\n"
        "************************* IMPORTANT *************************\n"
        "NKEY Seed printed below can be used to sign and prove identity.\n\n"
        f"-----BEGIN USER NKEY SEED-----\n{seed}\n------END USER NKEY SEED------\n"
    )


class Secrets:
    """A temp directory of test PKI and keys, with helpers to build server configs and contexts."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="cosmo-nats-secure-"))
        self.ca = trustme.CA()
        cert = self.ca.issue_cert("127.0.0.1", "localhost")
        self.server_cert = self.write("server.pem", cert.cert_chain_pems[0].bytes())
        self.server_key = self.write("server.key", cert.private_key_pem.bytes())
        self.ca_file = self.write("ca.pem", self.ca.cert_pem.bytes())

    def write(self, name: str, data: bytes | str) -> Path:
        path = self.dir / name
        path.write_bytes(data if isinstance(data, bytes) else data.encode())
        os.chmod(path, 0o600)
        return path

    def client_context(self, *, trust: bool = True, client_cert: bool = False) -> ssl.SSLContext:
        """A client context trusting our CA (or not), with a client certificate (or not)."""
        ctx = ssl.create_default_context()
        if trust:
            self.ca.configure_trust(ctx)
        if client_cert:
            self.ca.issue_cert("cosmo-client@example.test").configure_cert(ctx)
        return ctx

    def tls_block(self, *, verify: bool = False) -> str:
        ca = f'  ca_file: "{self.ca_file}"\n  verify: true\n' if verify else ""
        files = f'  cert_file: "{self.server_cert}"\n  key_file: "{self.server_key}"\n'
        return f"tls {{\n{files}{ca}  timeout: 2\n}}\n"

    def server(self, config: str, **kw: Any) -> NatsServer:
        """A NatsServer with *config* (not started)."""
        path = self.write(f"server-{len(list(self.dir.iterdir()))}.conf", config)
        return NatsServer(extra_args=["-c", str(path)], **kw)


class Operator:
    """Operator mode: an operator, one account preloaded in a memory resolver, users on demand."""

    def __init__(self, secrets: Secrets) -> None:
        self.secrets = secrets
        self.operator = Identity(nkeys.PREFIX_BYTE_OPERATOR)
        self.account = Identity(nkeys.PREFIX_BYTE_ACCOUNT)
        limits = {"subs": -1, "data": -1, "payload": -1, "imports": -1, "exports": -1, "wildcards": True,
                  "conn": -1, "leaf": -1}  # fmt: skip
        account_jwt = jwt(
            {"type": "account", "limits": limits, "default_permissions": {"pub": {}, "sub": {}}},
            self.account,
            self.operator,
        )
        op_path = secrets.write("operator.jwt", jwt({"type": "operator"}, self.operator, self.operator))
        self.config = (
            f'operator: "{op_path}"\nresolver: MEMORY\n'
            f'resolver_preload: {{\n  {self.account.public}: "{account_jwt}"\n}}\n'
        )

    def user_creds(self, name: str, *, signer: Identity | None = None, **claims: Any) -> Path:
        """A .creds file for a new user whose JWT *signer* (default: the account) signed."""
        user = Identity(nkeys.PREFIX_BYTE_USER)
        user_jwt = jwt(
            {"type": "user", "pub": {}, "sub": {}, "subs": -1, "data": -1, "payload": -1},
            user,
            signer or self.account,
            **claims,
        )
        return self.secrets.write(name, creds_text(user_jwt, user.seed))
