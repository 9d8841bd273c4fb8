"""The fork/gunicorn matrix: a module-level facade under real gunicorn, with a worker on a cosmo:// bus.

sync and gthread workers, with and without --preload, and --preload with the facade
started in the master before the fork.  Every reply is checked.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from cosmonapse_sync.testing import ChildProcess, dev_bus, gunicorn

HERE = Path(__file__).resolve().parent
WORKER = HERE.parent / "flask" / "worker.py"

CONFIGS = [
    pytest.param("sync", False, False, id="sync"),
    pytest.param("sync", True, False, id="sync-preload"),
    pytest.param("gthread", False, False, id="gthread"),
    pytest.param("gthread", True, False, id="gthread-preload"),
    pytest.param("sync", True, True, id="sync-preload-started-in-master"),
    pytest.param("gthread", True, True, id="gthread-preload-started-in-master"),
]


@pytest.fixture(scope="module")
def bus() -> Iterator[str]:
    with dev_bus("api-demo") as url:
        env = {"SYNAPSE_URL": url, "COSMO_NAMESPACE": "api-demo"}
        with ChildProcess([sys.executable, str(WORKER)], ready="worker ready", env=env):
            yield url


def expected(prompt: str) -> str:
    return f"{len(prompt.split())} words: {prompt}"


@pytest.mark.slow
@pytest.mark.parametrize(("worker_class", "preload", "start_at_import"), CONFIGS)
def test_module_level_facade_under_gunicorn(
    bus: str, worker_class: str, preload: bool, start_at_import: bool
) -> None:
    env = {"SYNAPSE_URL": bus, "COSMO_NAMESPACE": "api-demo", "COSMO_START_AT_IMPORT": "01"[start_at_import]}
    threads = 4 if worker_class == "gthread" else 1
    app = "wsgi_app:application"
    serve = gunicorn(app, chdir=HERE, worker_class=worker_class, threads=threads, preload=preload, env=env)
    with serve as (base, server):
        prompts = [f"request {i} " + "word " * (i % 7) for i in range(32)]
        with httpx.Client(base_url=base, timeout=30) as client, ThreadPoolExecutor(8) as pool:
            replies = list(pool.map(lambda p: client.post("/ask", json={"prompt": p}), prompts))
            status = client.get("/status").json()
            bad = client.post("/ask", json={})
        for prompt, reply in zip(prompts, replies, strict=True):
            assert reply.status_code == 200, reply.text
            assert reply.json()["response"] == expected(prompt)
        assert bad.status_code == 400
        server.wait_for(r"Booting worker with pid: \d+.*\n(.*\n)*.*Booting worker with pid: \d+", 10)
        booted = {int(p) for p in re.findall(r"Booting worker with pid: (\d+)", server.output)}
        served = {r.json()["pid"] for r in replies}
        assert served <= booted and server.pid not in served
        # The facade was imported in the master with --preload, in the worker without; it runs in the worker.
        assert status["import_pid"] == (server.pid if preload else status["pid"])
        assert status["running"] and status["portal_native_id"] is not None
        code = server.stop()
    assert code == 0, server.output
    assert "Traceback" not in server.output, server.output
