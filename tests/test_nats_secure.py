"""NatsSynapse against secured nats-servers: TLS, mutual TLS, user/password, token, NKEY, JWT .creds.

Every server is configured by the test (certificates from a private CA made with
trustme, keys and JWTs made with nkeys); every promise has its refusal beside it:
an untrusted CA, a missing client certificate, a wrong password or token, a
foreign NKEY, an expired or wrongly signed JWT.  Refusals must come at once
with an error saying which (the connect timeout is set long to prove no retry loop).
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import anyio
import nkeys
import pytest
from nats_secure_util import Identity, Operator, Secrets
from nats_util import Inbox, NatsServer, nats_server_binary

from cosmonapse import Axon, Dendrite, Signal, SignalType, SynapseError, connect_synapse
from cosmonapse.synapse.nats import NatsAuthError, NatsSynapse, NatsTLSError, PayloadTooLargeError

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.skipif(nats_server_binary() is None, reason="nats-server not installed"),
]

#: Long on purpose: a refusal that waited for it (a retry loop) would fail the fail_after below.
SLOW_CONNECT = 30.0
FAST = 5.0


@pytest.fixture(scope="module")
def secrets() -> Secrets:
    return Secrets()


@pytest.fixture(scope="module")
def tls_server(secrets: Secrets) -> Iterator[NatsServer]:
    """TLS with user/password auth."""
    config = secrets.tls_block() + 'authorization {\n  user: "cosmo"\n  password: "s3cret"\n}\n'
    with secrets.server(config) as srv:
        yield srv


@pytest.fixture(scope="module")
def mtls_server(secrets: Secrets) -> Iterator[NatsServer]:
    with secrets.server(secrets.tls_block(verify=True)) as srv:
        yield srv


def sig(**payload: object) -> Signal:
    return Signal(type=SignalType.TASK, payload=dict(payload))


async def round_trip(synapse: NatsSynapse, subject: str = "sec.x") -> None:
    inbox = Inbox()
    await synapse.subscribe(subject, inbox)
    await synapse.publish(subject, sig(ok=True))
    assert [s.payload for s in await inbox.wait_for(1)] == [{"ok": True}]


# -- TLS ----------------------------------------------------------------------------


async def test_dispatch_over_tls_with_auth(tls_server: NatsServer, secrets: Secrets) -> None:
    """The whole stack over tls:// with a private CA and a password: a worker answers an orchestrator."""
    url = f"tls://cosmo:s3cret@127.0.0.1:{tls_server.port}"
    ctx = secrets.client_context()

    async def echo(input: dict, ctx: object) -> dict:
        return {"echo": input}

    wsyn = await connect_synapse(url, tls=ctx)
    osyn = await connect_synapse(url, tls=ctx)
    try:
        worker = Dendrite(synapse=wsyn, namespace="sec", role="worker", heartbeat_s=0)
        worker.attach_axon(Axon("echo", echo, ["echo"]))
        orch = Dendrite(synapse=osyn, namespace="sec", heartbeat_s=0)
        async with worker, orch:
            await wsyn.flush()  # type: ignore[attr-defined]
            reply = await orch.dispatch_and_wait(capabilities=["echo"], input={"x": 1}, timeout_s=10)
            assert reply.payload["output"] == {"echo": {"x": 1}}
            reply = await orch.dispatch_and_wait(neuron="echo", input={"x": 2}, timeout_s=10)
            assert reply.payload["output"] == {"echo": {"x": 2}}
    finally:
        await wsyn.close()
        await osyn.close()


async def test_tls_required_by_the_server_with_a_nats_url_and_credentials_as_arguments(
    tls_server: NatsServer, secrets: Secrets
) -> None:
    async with NatsSynapse(
        tls_server.url, user="cosmo", password="s3cret", tls=secrets.client_context()
    ) as syn:
        await round_trip(syn)


async def test_untrusted_certificate_fails_at_once_saying_so(
    tls_server: NatsServer, secrets: Secrets
) -> None:
    url = f"tls://cosmo:s3cret@127.0.0.1:{tls_server.port}"
    t0 = time.monotonic()
    with anyio.fail_after(FAST), pytest.raises(NatsTLSError, match="certificate is not trusted"):
        async with NatsSynapse(url, tls=secrets.client_context(trust=False), connect_timeout=SLOW_CONNECT):
            pass
    # Without tls= the system's CAs are used: ours is not among them.
    with anyio.fail_after(FAST), pytest.raises(NatsTLSError, match="certificate is not trusted"):
        async with NatsSynapse(url, connect_timeout=SLOW_CONNECT):
            pass
    assert time.monotonic() - t0 < FAST


async def test_wrong_host_name_in_the_certificate_is_refused(
    tls_server: NatsServer, secrets: Secrets
) -> None:
    url = f"tls://cosmo:s3cret@127.0.0.1:{tls_server.port}"
    with anyio.fail_after(FAST), pytest.raises(NatsTLSError, match=r"not trusted for 'nats\.example\.test'"):
        async with NatsSynapse(
            url, tls=secrets.client_context(), tls_hostname="nats.example.test", connect_timeout=SLOW_CONNECT
        ):
            pass


async def test_tls_url_to_a_plain_server_is_refused() -> None:
    with (
        NatsServer() as plain,
        anyio.fail_after(FAST),
        pytest.raises(NatsTLSError, match="does not offer TLS"),
    ):
        async with NatsSynapse(f"tls://127.0.0.1:{plain.port}", connect_timeout=SLOW_CONNECT):
            pass


async def test_mutual_tls(mtls_server: NatsServer, secrets: Secrets) -> None:
    async with NatsSynapse(mtls_server.url, tls=secrets.client_context(client_cert=True)) as syn:
        await round_trip(syn)


async def test_mutual_tls_without_a_client_certificate_fails_at_once(
    mtls_server: NatsServer, secrets: Secrets
) -> None:
    with anyio.fail_after(FAST), pytest.raises(NatsTLSError):
        async with NatsSynapse(
            mtls_server.url, tls=secrets.client_context(client_cert=False), connect_timeout=SLOW_CONNECT
        ):
            pass


# -- user/password and token --------------------------------------------------------------


async def test_user_password_in_the_url_and_as_arguments_and_refusals() -> None:
    with NatsServer(extra_args=["--user", "cosmo", "--pass", "s3cret"]) as srv:
        async with NatsSynapse(f"nats://cosmo:s3cret@127.0.0.1:{srv.port}") as syn:
            await round_trip(syn)
        async with NatsSynapse(srv.url, user="cosmo", password="s3cret") as syn:
            await round_trip(syn)
        with anyio.fail_after(FAST), pytest.raises(NatsAuthError, match="user 'cosmo' and password"):
            async with NatsSynapse(srv.url, user="cosmo", password="wrong", connect_timeout=SLOW_CONNECT):
                pass
        with anyio.fail_after(FAST), pytest.raises(NatsAuthError, match="requires authentication"):
            async with NatsSynapse(srv.url, connect_timeout=SLOW_CONNECT):
                pass


async def test_token_in_the_url_and_as_an_argument_and_a_wrong_one() -> None:
    with NatsServer(extra_args=["--auth", "t0ken"]) as srv:
        async with NatsSynapse(f"nats://t0ken@127.0.0.1:{srv.port}") as syn:
            await round_trip(syn)
        async with NatsSynapse(srv.url, token="t0ken") as syn:
            await round_trip(syn)
        with anyio.fail_after(FAST), pytest.raises(NatsAuthError, match=r"\(token\)"):
            async with NatsSynapse(srv.url, token="nope", connect_timeout=SLOW_CONNECT):
                pass


# -- NKEY ---------------------------------------------------------------------------


async def test_nkey_seed_as_text_and_as_a_file_and_a_foreign_key(secrets: Secrets) -> None:
    user = Identity(nkeys.PREFIX_BYTE_USER)
    config = f'authorization {{\n  users: [ {{ nkey: "{user.public}" }} ]\n}}\n'
    with secrets.server(config) as srv:
        async with NatsSynapse(srv.url, nkeys_seed=user.seed) as syn:
            await round_trip(syn)
        seed_file = secrets.write("user.nk", user.seed + "\n")
        async with NatsSynapse(srv.url, nkeys_seed=seed_file) as syn:
            await round_trip(syn)
        stranger = Identity(nkeys.PREFIX_BYTE_USER)
        with anyio.fail_after(FAST), pytest.raises(NatsAuthError, match="NKEY seed"):
            async with NatsSynapse(srv.url, nkeys_seed=stranger.seed, connect_timeout=SLOW_CONNECT):
                pass
        with anyio.fail_after(FAST), pytest.raises(NatsAuthError, match="not valid"):
            async with NatsSynapse(srv.url, nkeys_seed="SX" + "A" * 56, connect_timeout=SLOW_CONNECT):
                pass  # seed-shaped, no such key type
        with anyio.fail_after(FAST), pytest.raises(NatsAuthError, match="cannot read NATS credentials"):
            async with NatsSynapse(srv.url, nkeys_seed="/no/such/seed.nk", connect_timeout=SLOW_CONNECT):
                pass


# -- JWT (.creds) in operator mode ----------------------------------------------------------


@pytest.fixture(scope="module")
def operator(secrets: Secrets) -> Operator:
    return Operator(secrets)


@pytest.fixture(scope="module")
def operator_server(secrets: Secrets, operator: Operator) -> Iterator[NatsServer]:
    with secrets.server(operator.config) as srv:
        yield srv


async def test_user_credentials_file(operator_server: NatsServer, operator: Operator) -> None:
    creds = operator.user_creds("good.creds")
    async with (
        NatsSynapse(operator_server.url, user_credentials=creds) as a,
        NatsSynapse(operator_server.url, user_credentials=str(creds)) as b,
    ):
        inbox = Inbox()
        await a.subscribe("jwt.x", inbox)
        await a.flush()
        await b.publish("jwt.x", sig(n=1))
        assert [s.payload for s in await inbox.wait_for(1)] == [{"n": 1}]


@pytest.mark.parametrize("case", ["expired", "foreign-signer", "no-credentials", "not-a-creds-file"])
async def test_bad_user_credentials_fail_at_once(
    operator_server: NatsServer, operator: Operator, secrets: Secrets, case: str
) -> None:
    kw: dict[str, object] = {"connect_timeout": SLOW_CONNECT}
    if case == "expired":
        kw["user_credentials"] = operator.user_creds("expired.creds", exp=int(time.time()) - 60)
    elif case == "foreign-signer":  # a JWT no account of this operator signed
        kw["user_credentials"] = operator.user_creds(
            "foreign.creds", signer=Identity(nkeys.PREFIX_BYTE_ACCOUNT)
        )
    elif case == "not-a-creds-file":
        kw["user_credentials"] = secrets.write("junk.creds", "hello\n")
    with anyio.fail_after(FAST), pytest.raises(NatsAuthError) as info:
        async with NatsSynapse(operator_server.url, **kw):  # type: ignore[arg-type]
            pass
    expected = {
        "expired": "user JWT from",
        "foreign-signer": "user JWT from",
        "no-credentials": "requires authentication",
        "not-a-creds-file": "is not a NATS .creds file",
    }[case]
    assert expected in str(info.value)


# -- headers, no_echo, max_payload ------------------------------------------------------------


TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


async def test_trace_context_goes_out_as_headers(tls_server: NatsServer, secrets: Secrets) -> None:
    """A raw connection that asked for headers sees HMSG with traceparent/tracestate."""
    async with NatsSynapse(
        tls_server.url, user="cosmo", password="s3cret", tls=secrets.client_context()
    ) as a:
        seen: list[dict[str, str]] = []

        async def capture(s: Signal) -> None:
            seen.append({k: s.meta[k] for k in ("traceparent", "tracestate") if k in s.meta})

        await a.subscribe("hdr.x", capture)
        await a.publish(
            "hdr.x", Signal(type=SignalType.TASK, meta={"traceparent": TRACEPARENT, "tracestate": "k=v"})
        )
        await a.flush()
        with anyio.fail_after(FAST):
            while not seen:
                await a.flush()
        assert seen == [{"traceparent": TRACEPARENT, "tracestate": "k=v"}]


async def test_headers_fill_in_trace_context_the_frame_lacks() -> None:
    with NatsServer() as srv:
        async with NatsSynapse(srv.url) as a, NatsSynapse(srv.url) as b:
            inbox = Inbox()
            await a.subscribe("hdr.in", inbox)
            await a.flush()
            plain = Signal(type=SignalType.TASK, payload={"n": 1})
            from cosmonapse import encode_signal

            await b.publish_bytes(
                "hdr.in", encode_signal(plain), headers={"Traceparent": TRACEPARENT, "X-Other": "1"}
            )
            own = Signal(
                type=SignalType.TASK, meta={"traceparent": "00-" + "1" * 32 + "-" + "2" * 16 + "-01"}
            )
            await b.publish_bytes("hdr.in", encode_signal(own), headers={"traceparent": TRACEPARENT})
            got = await inbox.wait_for(2)
            assert got[0].meta == {"traceparent": TRACEPARENT}  # filled in, other headers ignored
            assert got[1].meta == own.meta  # the frame's own value wins
            raw = await _raw_hmsg(srv.port)
            assert b"NATS/1.0\r\ntraceparent: " + TRACEPARENT.encode() in raw


async def _raw_hmsg(port: int) -> bytes:
    """Publish a Signal with trace context through NatsSynapse; read what a raw header client gets."""
    stream = await anyio.connect_tcp("127.0.0.1", port)
    async with stream, NatsSynapse(f"nats://127.0.0.1:{port}") as pub:
        await stream.send(b'CONNECT {"verbose":false,"headers":true,"protocol":1}\r\nSUB raw.h 1\r\nPING\r\n')
        buf = b""
        with anyio.fail_after(FAST):
            while b"PONG" not in buf:
                buf += await stream.receive()
            await pub.publish("raw.h", Signal(type=SignalType.TASK, meta={"traceparent": TRACEPARENT}))
            while b"HMSG raw.h 1" not in buf or not buf.endswith(b"\r\n"):
                buf += await stream.receive()
        return buf


async def test_no_echo() -> None:
    with NatsServer() as srv:
        async with NatsSynapse(srv.url, no_echo=True) as quiet, NatsSynapse(srv.url) as other:
            mine, theirs = Inbox(), Inbox()
            await quiet.subscribe("echo.x", mine)
            await other.subscribe("echo.x", theirs)
            await quiet.flush()
            await other.flush()
            await quiet.publish("echo.x", sig(src="quiet"))
            await other.publish("echo.x", sig(src="other"))
            # other's own copy of both arrives; quiet gets only other's: nothing of its own.
            assert len(await theirs.wait_for(2)) == 2
            assert [s.payload for s in await mine.wait_for(1)] == [{"src": "other"}]
            await quiet.flush()
            assert len(mine.items) == 1


async def test_max_payload_counts_the_headers_too() -> None:
    with NatsServer(max_payload=4096) as srv:
        async with NatsSynapse(srv.url) as a:
            meta = {"traceparent": TRACEPARENT}
            body = Signal(type=SignalType.TASK, payload={"blob": "x" * 3900}, meta=meta)
            with pytest.raises(PayloadTooLargeError, match=r"payload of \d+ bytes .* max_payload of 4096"):
                await a.publish("big.h", body)
            await round_trip(a)  # the connection is fine


async def test_credentials_refused_after_a_restart_are_reported_not_hidden(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The server comes back with another password: reconnects are refused, publishes say why."""
    import logging

    caplog.set_level(logging.ERROR, logger="cosmonapse.synapse.nats")
    srv = NatsServer(extra_args=["--user", "cosmo", "--pass", "old"]).start()
    try:
        async with NatsSynapse(srv.url, user="cosmo", password="old", publish_timeout=1.0) as syn:
            await round_trip(syn)
            srv.kill()
            srv.extra_args = ["--user", "cosmo", "--pass", "new"]
            await anyio.to_thread.run_sync(srv.start)
            with anyio.fail_after(FAST), pytest.raises(SynapseError, match="refused our credentials"):
                while True:  # until the reader has seen the old connection go
                    await syn.publish("after.restart", sig())
                    await syn.flush(timeout_s=1.0)
            assert "refused our credentials (user 'cosmo' and password)" in caplog.text
    finally:
        srv.stop()
