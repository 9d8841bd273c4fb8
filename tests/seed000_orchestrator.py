"""Seed 000's Flask orchestrator and its decorator section, as the seed writes them (no HTTP layer).

    SYNAPSE_URL=cosmo://127.0.0.1:PORT python tests/seed000_orchestrator.py "What is a Dendrite?"

A dedicated asyncio loop runs in a background thread and hosts the Dendrite;
the decorators are attached from the main thread *after connecting*, exactly
as the seed says; then one request runs through ``on_trace`` and
``dispatch_and_wait``.  Everything the decorators print goes to stdout.  The
only departures from the seed: an Event instead of its half-second pause to know
the loop is connected, a ``capability="vision"`` filter that must stay silent,
waiting (bounded) until every handler has printed what the trace gives it
(handlers run concurrently), and printing the reply from the loop thread so no
handler's line can be split by it.
"""

from __future__ import annotations

import asyncio
import os
import sys
import threading

from cosmonapse import Dendrite, connect_synapse, new_trace_id

SYNAPSE_URL = os.environ.get("SYNAPSE_URL", "cosmo://127.0.0.1:7070")

_loop: asyncio.AbstractEventLoop
_dendrite: Dendrite
_connected = threading.Event()


async def _connect() -> None:
    global _dendrite
    synapse = await connect_synapse(SYNAPSE_URL)
    _dendrite = Dendrite(synapse=synapse, namespace="api-demo", dendrite_id="flask-orchestrator")
    await _dendrite.__aenter__()


def _start_loop() -> None:
    global _loop
    _loop = asyncio.new_event_loop()
    asyncio.set_event_loop(_loop)
    _loop.run_until_complete(_connect())
    _connected.set()
    _loop.run_forever()


threading.Thread(target=_start_loop, daemon=True).start()  # allowed: the seed's Flask loop thread
if not _connected.wait(timeout=30):
    raise SystemExit("the loop did not connect")
orchestrator = _dendrite
joined = threading.Event()
# Handlers run concurrently (one queue per handler and trace): before printing the reply,
# wait (bounded) until each of them has printed what this trace gives it.
heard: dict[str, int] = {}
heard_changed = threading.Condition()


def _heard(what: str) -> None:
    with heard_changed:
        heard[what] = heard.get(what, 0) + 1
        heard_changed.notify_all()


def _all_handlers_done() -> bool:
    wanted = ("AGENT_OUTPUT", "output", "worker done", "text-generation done", "tool call", "tool result")
    return all(heard.get(k) for k in wanted) and heard.get("token") == heard.get("THOUGHT_DELTA")


# ── the seed's decorators ──────────────────────────────────────────────────────


@orchestrator.on_agent_output
async def _log_output(sig):
    print(f"[{sig.trace_id[:8]}] output from {sig.directed.id if sig.directed else '?'}")
    _heard("output")


@orchestrator.on_agent_output(neuron="worker")
async def _worker_done(sig):
    print(f"worker done: {sig.directed.id if sig.directed else '?'}")
    _heard("worker done")


@orchestrator.on_agent_output(capability="text-generation")
async def _gen_done(sig):
    print(f"text-generation done: {sig.directed.id if sig.directed else '?'}")
    _heard("text-generation done")


@orchestrator.on_agent_output(capability="vision")
async def _vision_done(sig):
    print("vision done (must not happen)")


@orchestrator.on_clarification
async def _handle_clarification(sig):
    question = sig.payload.get("question", "")
    print(f"[{sig.trace_id[:8]}] clarification: {question}")
    await orchestrator.respond_to_clarification(sig, answer="Please use plain English, no technical jargon.")


@orchestrator.on_error_signal
async def _handle_error(sig):
    print(f"[{sig.trace_id[:8]}] error: {sig.payload.get('message')}")


@orchestrator.on_escalation
async def _handle_escalation(sig):
    print(f"[{sig.trace_id[:8]}] escalated: {sig.payload.get('reason')}")
    await orchestrator.respond_to_escalation(sig, input={"override": "proceed with best effort"})


@orchestrator.on_thought_delta
async def _stream_thought(sig):
    token = sig.payload.get("delta", "")
    print(token, end="", flush=True)
    _heard("token")


@orchestrator.on_tool_call
async def _on_tool_call(sig):
    print(f"  tool → {sig.payload.get('tool_name')}")
    _heard("tool call")


@orchestrator.on_tool_result
async def _on_tool_result(sig):
    print(f"  tool ← {sig.payload.get('tool_name')}")
    _heard("tool result")


@orchestrator.on_register_signal
async def _on_register(sig):
    print(
        f"worker joined: {sig.directed.id if sig.directed else '?'}  caps={sig.payload.get('capabilities')}"
    )
    joined.set()


@orchestrator.on_heartbeat_signal
async def _on_heartbeat(sig):
    print(f"heartbeat: {sig.directed.id if sig.directed else '?'}")


async def _print_on_loop(line: str) -> None:
    print(line)


def main(prompt: str) -> int:
    if not joined.wait(timeout=5):  # the seed prints this once the worker is known
        print("no REGISTER heard")
        return 1
    trace_id = new_trace_id()

    @orchestrator.on_trace(trace_id)
    async def _trace_all(sig):
        print(f"  [{sig.type.value:20}] {sig.directed.id if sig.directed else '?'}")
        _heard(sig.type.value)

    future = asyncio.run_coroutine_threadsafe(
        orchestrator.dispatch_and_wait(
            neuron="worker", input={"prompt": prompt}, trace_id=trace_id, timeout_s=30.0
        ),
        _loop,
    )
    reply = future.result(timeout=32)
    with heard_changed:
        if not heard_changed.wait_for(_all_handlers_done, timeout=10):
            print(f"the handlers did not all finish: {heard}")
            return 1
    # printed on the loop thread, like every handler: a REGISTER answering the second DISCOVER
    # (the worker spreads its answers over 0-100 ms) may still be printing there
    line = f"reply: {reply.payload['output']['response']}"
    asyncio.run_coroutine_threadsafe(_print_on_loop(line), _loop).result(timeout=10)
    asyncio.run_coroutine_threadsafe(orchestrator.__aexit__(None, None, None), _loop).result(timeout=10)
    asyncio.run_coroutine_threadsafe(orchestrator.synapse.close(), _loop).result(timeout=10)
    return 0


if __name__ == "__main__":
    code = main(" ".join(sys.argv[1:]) or "What is a Dendrite?")
    sys.stdout.flush()
    raise SystemExit(code)
