"""The ``http``/``flask`` source: a real Flask app over HTTP and the same app in-process (WSGI)."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import anyio
import pytest
from flask import Flask, jsonify, request
from werkzeug.serving import make_server

from cosmonapse.neuron import Neuron, NeuronConfigError, NeuronHTTPError, NeuronInputError

pytestmark = pytest.mark.anyio


def make_app() -> Flask:
    app = Flask("neuron-test")

    @app.post("/")
    def root():  # type: ignore[no-untyped-def]
        body = request.get_json()
        return jsonify({"echo": body, "auth": request.headers.get("authorization")})

    @app.get("/items/<int:item>")
    def item(item: int):  # type: ignore[no-untyped-def]
        return jsonify({"item": item, "q": request.args.get("q")})

    @app.post("/form")
    def form():  # type: ignore[no-untyped-def]
        return f"name={request.form['name']}"

    @app.get("/visit")
    def visit():  # type: ignore[no-untyped-def]
        seen = request.cookies.get("seen")
        resp = jsonify({"seen_before": seen is not None})
        resp.set_cookie("seen", "1")
        return resp

    @app.get("/boom")
    def boom():  # type: ignore[no-untyped-def]
        raise ZeroDivisionError("no")

    return app


@pytest.fixture
def flask_url() -> Iterator[str]:
    """The Flask app served by werkzeug's real WSGI server on a loopback port (test-side thread)."""
    server = make_server("127.0.0.1", 0, make_app(), threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        thread.join(5)


async def _exercise(neuron: object) -> None:
    call = neuron  # the Neuron contract: async (input, context) -> dict
    with anyio.fail_after(10):
        bare = await call({"prompt": "hello"}, [])  # type: ignore[operator]
        got = await call({"method": "GET", "path": "/items/7", "query": {"q": "x"}}, [])  # type: ignore[operator]
        form = await call({"path": "/form", "data": {"name": "ada"}}, [])  # type: ignore[operator]
        missing = await call({"method": "GET", "path": "/nope"}, [])  # type: ignore[operator]
    assert bare["status"] == 200 and bare["ok"] is True
    assert bare["json"]["echo"] == {"prompt": "hello"}, "a bare input is the JSON body"
    assert bare["meta"] == {"method": "POST", "path": "/"}
    assert got["json"] == {"item": 7, "q": "x"}
    assert got["meta"] == {"method": "GET", "path": "/items/7"}
    assert form["response"] == "name=ada" and form["json"] is None
    assert missing["status"] == 404 and missing["ok"] is False
    with anyio.fail_after(10):
        for _ in range(2):  # cookies set for one TASK are not sent with the next
            visit = await call({"method": "GET", "path": "/visit"}, [])  # type: ignore[operator]
            assert visit["json"] == {"seen_before": False}


async def test_flask_app_over_http(flask_url: str) -> None:
    async with Neuron("http", url=flask_url, api_key="tok-abcdef", backoff=0.01, max_attempts=2) as neuron:
        await _exercise(neuron)
        with anyio.fail_after(10):
            out = await neuron({"x": 1}, [])
        with anyio.fail_after(10), pytest.raises(NeuronHTTPError, match=r"HTTP 500 for GET .*/boom after 2"):
            await neuron({"method": "GET", "path": "/boom"}, [])
    # The app echoes the Authorization header: the Neuron's own key never comes back out (issue 9).
    assert out["json"]["auth"] == "Bearer ***"


async def test_flask_app_in_process_wsgi() -> None:
    async with Neuron("flask", app=make_app()) as neuron:
        await _exercise(neuron)
        with (
            anyio.fail_after(10),
            pytest.raises(NeuronHTTPError, match="WSGI app answered HTTP 500 for GET /boom"),
        ):
            await neuron({"method": "GET", "path": "/boom"}, [])


async def test_http_source_refuses_absolute_urls_in_input() -> None:
    async with Neuron("http", app=make_app()) as neuron:
        with pytest.raises(NeuronInputError, match="relative"):
            await neuron({"path": "http://elsewhere.example/"}, [])


def test_http_source_needs_exactly_one_target() -> None:
    with pytest.raises(NeuronConfigError, match="exactly one of url="):
        Neuron("http")
    with pytest.raises(NeuronConfigError, match="exactly one of url="):
        Neuron("http", url="http://127.0.0.1:1", app=make_app())
