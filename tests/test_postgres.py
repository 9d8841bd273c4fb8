"""The Postgres backends as deployments use them: several OS processes on one database, and faults.

* two processes (one on asyncio, one on trio) write and roll back traces on the
  same entries, and both roll back every trace: each journal record is applied
  exactly once, the end state is the last committed write per entry, and the
  idempotent imprints they both send are written once;
* two processes sweep the registry at once: each stale neuron is marked by
  exactly one of them;
* a worker process on its own bus (another machine) is in the shared registry
  while it lives, and a Dendrite in this process sweeps it out once it is killed;
* a restarted server, a statement stuck behind a lock, an unreachable server and
  a missing psycopg each end in a clear outcome, never a hang.

Every other engram and registry test also runs on Postgres (test_engram*.py,
test_registry.py).
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import anyio
import pytest
from pg_util import PostgresServer

from cosmonapse import (
    Dendrite,
    Directed,
    MemorySynapse,
    NeuronRecord,
    PostgresEngram,
    PostgresRegistryStore,
    Signal,
    SignalType,
)
from cosmonapse.engram import EngramHost
from cosmonapse.testing.harness import SignalRecorder

PEER = str(Path(__file__).with_name("pg_peer.py"))
LINE_TIMEOUT_S = 60.0


class Peer:
    """A ``pg_peer.py`` process: JSON lines out, barrier lines in; killed if still running at the end."""

    def __init__(self, role: str, dsn: str, name: str, backend: str) -> None:
        self.name = name
        self._err = tempfile.TemporaryFile()  # noqa: SIM115  # closed by close(), after the process ends
        self.proc = subprocess.Popen(
            [sys.executable, PEER, role, dsn, name, backend],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._err,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )  # fmt: skip
        self._buf = b""

    def line(self, timeout_s: float = LINE_TIMEOUT_S) -> dict[str, Any]:
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        deadline = time.monotonic() + timeout_s
        while b"\n" not in self._buf:
            ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
            chunk = os.read(fd, 65536) if ready else b""
            if not chunk:
                what = "timed out" if not ready else f"exited with {self.proc.poll()}"
                raise AssertionError(f"peer {self.name} {what} before a line: {self.stderr()}")
            self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        data: dict[str, Any] = json.loads(line)
        return data

    def send(self, text: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(text.encode() + b"\n")
        self.proc.stdin.flush()

    def stderr(self) -> str:
        self._err.seek(0)
        return self._err.read().decode(errors="replace")[-3000:]

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=30)
        for pipe in (self.proc.stdin, self.proc.stdout):
            if pipe is not None:
                pipe.close()
        self._err.close()


@contextmanager
def peers(role: str, dsn: str, *names_and_backends: tuple[str, str]) -> Iterator[list[Peer]]:
    with ExitStack() as stack:
        started = []
        for name, backend in names_and_backends:
            peer = Peer(role, dsn, name, backend)
            stack.callback(peer.close)
            started.append(peer)
        yield started


def test_two_processes_write_and_roll_back_the_same_entries(postgres_dsn: str) -> None:
    with peers("engram", postgres_dsn, ("p1", "asyncio"), ("p2", "trio")) as (p1, p2):
        writes = p1.line()["ready"] + p2.line()["ready"]
        for p in (p1, p2):
            p.send(json.dumps(["p1", "p2"]))
        reports = p1.line()["reports"] + p2.line()["reports"]
        assert p1.proc.wait(30) == 0 and p2.proc.wait(30) == 0, p1.stderr() + p2.stderr()
    # Before any settlement the writes to a key were serialised: their versions are the global order.
    rolled_back = {w["trace"] for w in writes if int(w["trace"].rsplit("_", 1)[1]) % 2}
    assert len(rolled_back) == len(writes) // 2
    # Each process rolled back every odd trace of both: each journal record was applied exactly once.
    by_trace: dict[str, int] = {}
    for r in reports:
        by_trace[r["trace"]] = by_trace.get(r["trace"], 0) + r["restored"] + len(r["conflicts"])
    assert by_trace == dict.fromkeys(rolled_back, 1)
    assert any(r["conflicts"] for r in reports) and any(r["restored"] for r in reports)

    async def read() -> tuple[dict[str, Any], int, list[str]]:
        async with PostgresEngram(postgres_dsn, "shared") as e:
            values = {k: (await e.recall({"merge_key": k}))[0].entry["content"] for k in ("k0", "k1", "k2")}
            shared = len(await e.recall({"tag": "shared"}))
            return values, shared, await e.journaled_traces()

    values, shared, journaled = anyio.run(read)
    for key, value in values.items():
        committed = [w for w in writes if w["key"] == key and w["trace"] not in rolled_back]
        assert value == max(committed, key=lambda w: w["version"])["trace"]  # the last committed write
    assert shared == 20  # the same 20 imprint ids from both processes: written once each
    assert journaled == []


def test_two_processes_sweep_the_registry_at_once(postgres_dsn: str) -> None:
    old = datetime.now(UTC) - timedelta(hours=1)

    async def seed() -> None:
        store = PostgresRegistryStore(postgres_dsn)
        for i in range(300):
            await store.upsert(NeuronRecord(f"n{i:03d}", ["x"], registered_at=old, last_heartbeat=old))
        await store.close()

    anyio.run(seed)
    with peers("sweep", postgres_dsn, ("s1", "asyncio"), ("s2", "trio")) as (s1, s2):
        for peer in (s1, s2):
            assert peer.line() == {"ready": True}
        for peer in (s1, s2):
            peer.send("go")
        one, two = s1.line()["stale"], s2.line()["stale"]
    assert not set(one) & set(two), "a neuron was swept by both processes"
    assert sorted(one + two) == [f"n{i:03d}" for i in range(300)]


@pytest.mark.anyio
async def test_a_killed_worker_on_another_machine_is_swept_from_the_shared_registry(
    postgres_dsn: str,
) -> None:
    store = PostgresRegistryStore(postgres_dsn)
    with peers("worker", postgres_dsn, ("far-worker", "trio")) as (far,):
        await anyio.to_thread.run_sync(far.line)
        async with MemorySynapse() as bus:  # our own bus: we only share the database
            here = Dendrite(
                synapse=bus, namespace="pg", registry_store=store, heartbeat_s=0, stale_after_s=1.5
            )
            swept = anyio.Event()

            def refreshed() -> None:
                swept.set()

            here.on_refresh(refreshed)
            async with here:
                (rec,) = await here.find_neurons(capability="remote")
                assert rec.neuron_id == "far-worker" and rec.status == "registered"
                os.kill(far.proc.pid, signal.SIGKILL)  # no DEREGISTER, no last heartbeat
                with anyio.fail_after(15):
                    while await here.find_neurons(capability="remote"):
                        await swept.wait()
                        swept = anyio.Event()
    rec2 = await store.get("far-worker")
    assert rec2 is not None and rec2.status == "deregistered"
    await store.close()


@pytest.mark.anyio
async def test_a_server_restart_costs_no_call(
    postgres_dsn: str, postgres_server: tuple[str, PostgresServer | None]
) -> None:
    server = postgres_server[1]
    if server is None:
        pytest.skip("an external server (COSMONAPSE_TEST_POSTGRES_DSN) is not ours to restart")
    async with PostgresEngram(postgres_dsn, "notes") as e:
        store = PostgresRegistryStore(postgres_dsn)
        await e.imprint("add", {"id": "before", "content": 1}, trace_id="trc_r")
        await store.upsert(NeuronRecord("n", ["x"]))
        await anyio.to_thread.run_sync(server.restart)  # every pooled connection is now dead
        receipt = await e.imprint("add", {"id": "after", "content": 2}, trace_id="trc_r")
        assert receipt.error is None
        assert (await store.get("n")) is not None
        assert (await e.compensate("trc_r")).restored == 2  # the journal survived the restart
        assert await e.recall({}) == []
        await store.close()


@pytest.mark.anyio
async def test_a_write_stuck_behind_a_lock_ends_at_the_statement_timeout(postgres_dsn: str) -> None:
    import psycopg

    from cosmonapse.engram.postgres import WRITE_LOCK

    async with PostgresEngram(postgres_dsn, "notes", statement_timeout_s=0.3) as e:
        host = EngramHost(lambda trace: False)
        host.add(e)
        holder = psycopg.connect(postgres_dsn, autocommit=True)  # another process's long write
        with holder, holder.transaction():
            holder.execute("SELECT pg_advisory_xact_lock(%s)", (WRITE_LOCK,))
            started = anyio.current_time()
            with anyio.fail_after(10):
                (reply,) = await host.serve_imprint(
                    Signal(type=SignalType.IMPRINT, directed=Directed("notes"),
                           payload={"op": "add", "entry": {"id": "x", "content": 1}})
                )  # fmt: skip
            assert anyio.current_time() - started < 5
        assert reply.payload["error"].startswith("engram_exception:") and "timeout" in reply.payload["error"]
        ok = await e.imprint("add", {"id": "x", "content": 1})  # the lock is gone: the pool still works
        assert ok.error is None


@pytest.mark.anyio
async def test_an_unreachable_server_fails_fast_and_clearly() -> None:
    from nats_util import free_port
    from psycopg import OperationalError

    dsn = f"postgresql://nobody@127.0.0.1:{free_port()}/nothing"
    with anyio.fail_after(15), pytest.raises(OperationalError, match=r"127\.0\.0\.1"):
        await PostgresEngram(dsn, connect_timeout_s=2).connect()
    with anyio.fail_after(15), pytest.raises(OperationalError):
        await PostgresRegistryStore(dsn, connect_timeout_s=2).get("x")
    assert "password" not in repr(PostgresRegistryStore("postgresql://u:password@h/db"))
    with pytest.raises(ValueError):
        PostgresEngram("")
    with pytest.raises(ValueError):
        PostgresEngram(dsn, max_size=0)


def test_import_needs_no_psycopg_and_building_without_it_says_what_to_install() -> None:
    code = (
        "import sys; sys.modules['psycopg'] = None\n"
        "import cosmonapse\n"
        "assert 'psycopg' not in {m.split('.')[0] for m in sys.modules if sys.modules[m] is not None}\n"
        "try:\n"
        "    cosmonapse.PostgresEngram('postgresql://h/db')\n"
        "except ImportError as exc:\n"
        "    print(exc)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert "cosmonapse[postgres]" in done.stdout, done.stdout + done.stderr


@pytest.mark.anyio
async def test_a_stopped_trace_is_rolled_back_through_a_keeper_on_postgres(postgres_dsn: str) -> None:
    """The STOP path end to end on Postgres (the full matrix is in test_engram_dendrite.py)."""
    from cosmonapse.testing.harness import memory_cluster

    async with PostgresEngram(postgres_dsn, "notes") as e, memory_cluster() as c:
        keeper = Dendrite(synapse=c.synapse, namespace="test", role="worker", dendrite_id="keeper")
        keeper.attach_engram(e)
        async with keeper:
            trace = "trc_" + "7" * 26
            await c.orchestrator.imprint(engram_id="notes", op="add", entry={"id": "x", "content": 1},
                                         await_ack=True, trace_id=trace)  # fmt: skip
            acks = SignalRecorder()
            c.orchestrator.on_stopped(acks)
            await c.orchestrator.stop_trace(trace, rollback=True)
            (ack,) = await acks.wait_for(count=1)
            assert ack.payload["compensated"] == 1 and await e.recall({}) == []


def test_a_forked_child_never_touches_its_parents_connections(postgres_dsn: str) -> None:
    store = PostgresRegistryStore(postgres_dsn)
    anyio.run(store.upsert, NeuronRecord("parent", ["x"]))
    (inherited,) = store._db._idle  # the parent's pooled connection
    pid = os.fork()
    if pid == 0:  # the child (gunicorn --preload, say): its own connection, the parent's left alone
        code = 1
        try:
            anyio.run(store.upsert, NeuronRecord("child", ["x"]))
            code = 0 if store._db._idle and store._db._idle[0] is not inherited else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert not inherited.broken and inherited.execute("SELECT 1").fetchone() is not None  # still the parent's
    assert anyio.run(store.get, "child") is not None
    anyio.run(store.close)
