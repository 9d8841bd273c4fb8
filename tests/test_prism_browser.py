"""Prism as a person uses it: seed 000's three processes plus ``cosmo doppler --prism``,
the printed URL opened in a real headless Chromium, traces watched live."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from browser_util import chromium
from cli_util import COSMO

from cosmonapse import new_trace_id
from cosmonapse_sync.testing import ChildProcess, dev_bus, gunicorn

pytestmark = pytest.mark.slow
FLASK = Path(__file__).resolve().parents[1] / "examples" / "flask"
NS = "api-demo"
PUBLISHER = Path(__file__).with_name("prism_publish.py")


@pytest.fixture(scope="module")
def stack() -> Iterator[dict[str, str]]:
    """Terminal 1: the bus; 2: the worker; 3: the Flask app; and Prism, as seed 000 runs them."""
    with dev_bus(NS) as url:
        env = {"SYNAPSE_URL": url, "COSMO_NAMESPACE": NS, "ASK_TIMEOUT_S": "10"}
        with ChildProcess(
            [sys.executable, str(FLASK / "worker.py")], ready="worker ready", env=env
        ) as worker:
            app = gunicorn(
                "flask_app:app", chdir=FLASK, workers=1, worker_class="gthread", threads=4, env=env
            )
            prism_cmd = [
                *COSMO,
                "doppler",
                "--prism",
                f"--url={url}",
                "-n",
                NS,
                "--no-browser",
                "--port",
                "0",
                "--trace-url",
                "http://127.0.0.1:16686/trace/{trace_id}",
            ]
            with app as (base, _), ChildProcess(prism_cmd, ready=r" at (http://\S+)") as prism:
                assert prism.match is not None
                yield {"bus": url, "flask": base, "page": prism.match.group(1)}
                assert prism.stop() == 0, prism.output
            assert worker.stop() == 0


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with chromium() as ctx:
        yield ctx


@pytest.fixture
def page(browser: Any, stack: dict[str, str]) -> Iterator[Any]:
    page = browser.new_page()
    problems: list[str] = []
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(str(e)))
    page.goto(stack["page"])
    page.wait_for_selector("#status.live", timeout=15000)
    yield page
    page.close()
    assert problems == []  # no script error, no CSP violation


def stats(page: Any) -> dict[str, Any]:
    return page.evaluate("() => window.prism.stats()")


def ask(stack: dict[str, str], prompt: str) -> dict[str, Any]:
    reply = httpx.post(f"{stack['flask']}/ask", json={"prompt": prompt}, timeout=30)
    assert reply.status_code == 200, reply.text
    return reply.json()


def test_the_flask_example_traces_appear_live(page: Any, stack: dict[str, str]) -> None:
    page.wait_for_function("() => window.prism.stats().neurons >= 1", timeout=15000)  # DISCOVER answered
    reply = ask(stack, "watch this trace live in prism")
    trace = reply["trace_id"]
    page.click("#tabs button[data-tab=traces]")
    item = page.wait_for_selector(f'.trace-item[data-trace="{trace}"]', timeout=15000)
    assert "→ worker" in item.inner_text()
    item.click()
    page.wait_for_selector(".trace-head .state.done", timeout=15000)
    assert page.inner_text(".trace-head .tid") == trace
    assert page.inner_text(".thought").endswith("watch this trace live in prism ")  # assembled deltas
    lanes = page.eval_on_selector_all(".lane .lbl", "els => els.map(e => e.textContent)")
    assert "TASK → worker" in lanes and any(x.startswith("thinking · worker") for x in lanes)
    tree = page.eval_on_selector_all(".tree .tnode .badge", "els => els.map(e => e.textContent)")
    assert tree[:2] == ["TASK", "THOUGHT_DELTA"] and "AGENT_OUTPUT" in tree

    # the signal list, filtered by trace, then by type; the inspector shows the payload
    page.click("#tabs button[data-tab=signals]")
    page.fill("#f-trace", trace)
    page.wait_for_function(
        "() => document.querySelector('#f-count').textContent === '8 shown'"
    )  # TASK+6+reply
    page.select_option("#f-type", "AGENT_OUTPUT")
    page.wait_for_function("() => document.querySelector('#f-count').textContent === '1 shown'")
    page.click(".row")
    inspector = page.inner_text("#inspector")
    assert "AGENT_OUTPUT" in inspector and "6 words: watch this trace live in prism" in inspector
    page.click("#inspector .link")  # the trace link opens the trace view
    page.wait_for_selector("#tab-traces.active")


def test_a_full_trace_tools_stop_rollback_and_otel(page: Any, stack: dict[str, str]) -> None:
    trace = new_trace_id()
    otel = "4bf92f3577b34da6a3ce929d0e0e4736"
    done = subprocess.run(
        [sys.executable, str(PUBLISHER), stack["bus"], NS, trace, otel], timeout=60, check=False
    )
    assert done.returncode == 0
    page.click("#tabs button[data-tab=traces]")
    page.wait_for_selector(f'.trace-item[data-trace="{trace}"]', timeout=15000).click()
    page.wait_for_selector(".trace-head .state.stopped", timeout=15000)
    head = page.inner_text(".trace-head")
    assert otel in head and "rolled back" in head
    # the OTel trace id links out to the tracing UI (--trace-url)
    assert page.get_attribute(".trace-head a.otel", "href") == f"http://127.0.0.1:16686/trace/{otel}"
    assert page.inner_text(".thought").endswith("thinking about tools")
    lanes = page.eval_on_selector_all(".lane .lbl", "els => els.map(e => e.textContent)")
    assert "tool word_counter" in lanes  # tool_name wins over tool
    marks = page.eval_on_selector_all(".vmark span", "els => els.map(e => e.textContent)")
    assert marks == ["STOP · rollback", "STOPPED · rolled back"]
    flags = page.eval_on_selector_all(".tree .flag", "els => els.map(e => e.textContent)")
    assert flags.count("rollback") == 2
    page.click("#tabs button[data-tab=metrics]")
    page.wait_for_function("() => Number(document.querySelector('#m-errors').textContent) >= 1")
    page.wait_for_function(
        "() => document.querySelector('#errors').textContent.includes('E_TOOL: tool failed')"
    )


def test_pause_holds_signals_and_export_writes_the_view(
    page: Any, stack: dict[str, str], tmp_path: Path
) -> None:
    page.click("#pause")
    before = stats(page)["total"]
    reply = ask(stack, "six words held while we pause")  # TASK, 6 THOUGHT_DELTAs, AGENT_OUTPUT
    page.wait_for_function("() => window.prism.stats().held >= 8")
    page.wait_for_function("() => document.querySelector('#held').textContent.includes('Signals held')")
    assert stats(page)["total"] == before  # nothing reached the views while paused
    page.click("#pause")
    page.wait_for_function(f"() => window.prism.stats().total >= {before + 8}")
    page.click("#tabs button[data-tab=signals]")
    page.fill("#f-trace", reply["trace_id"])
    page.wait_for_function("() => document.querySelector('#f-count').textContent === '8 shown'")
    with page.expect_download() as download:
        page.click("#export")
    path = tmp_path / "view.jsonl"
    download.value.save_as(path)
    frames = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(frames) == 8 and {f["trace_id"] for f in frames} == {reply["trace_id"]}
    assert frames[0]["type"] == "TASK" and frames[-1]["type"] in ("AGENT_OUTPUT", "FINAL")


def test_a_foreign_page_cannot_read_the_bus(browser: Any, stack: dict[str, str], tmp_path: Path) -> None:
    """Another local site, holding even the right token, is refused by the Origin check."""
    ws_url = stack["page"].replace("http://", "ws://").replace("/?token=", "/ws?token=")
    (tmp_path / "evil.html").write_text("<!doctype html><title>evil</title>")
    with ChildProcess([sys.executable, "-m", "http.server", "0", "--bind", "127.0.0.1", "-d", str(tmp_path)],
                      ready=r"port (\d+)") as server:  # fmt: skip
        assert server.match is not None
        page = browser.new_page()
        page.goto(f"http://127.0.0.1:{server.match.group(1)}/evil.html")
        outcome = page.evaluate(
            """(url) => new Promise((done) => {
                const ws = new WebSocket(url);
                let got = 0;
                ws.onmessage = () => { got += 1; };
                ws.onclose = (e) => done({opened: ws.readyState, got, code: e.code});
                ws.onerror = () => {};
            })""",
            ws_url,
        )
        page.close()
    assert outcome["got"] == 0 and outcome["code"] == 1006  # handshake refused (HTTP 403)
