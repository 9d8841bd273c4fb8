"""Conformance of the agents on a live bus: probe them, record every frame, judge the record per rule.

    report = await run_conformance("cosmo://127.0.0.1:7070", "dev")
    print(report.render())

Written for peers we did not write — a worker in another SDK or language — so
it speaks raw frames (:mod:`.taps`), never our Dendrite.  Two halves:

* :func:`record` probes the namespace (DISCOVER; per neuron an addressed TASK,
  a capability-routed TASK, a ``finalize`` TASK and a TASK that is STOPped
  while it runs; optionally a worker it spawns and then terminates) and keeps
  a :class:`Transcript` of every frame, timed, with its own probes marked;
* :func:`judge` decides each rule from a transcript alone, so a recorded
  transcript (a golden file) can be judged again without a bus.

Rules (see ``RULES``): ``envelope``, ``discover``, ``register``, ``heartbeat``,
``task_reply``, ``routed_task``, ``finalize``, ``stop``, ``deregister``.  Each is
``pass``, ``fail`` (with what was wrong) or ``skip`` (with what it needs).
"""

from __future__ import annotations

import json
import os
import shlex
import signal as signals
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import anyio
import attrs

from ..codec import decode_signal
from ..errors import SignalDecodeError
from ..signal import Directed, Signal, SignalType
from ..subjects import signal_subject
from ..synapse.base import Synapse
from .taps import FrameTap, open_tap

__all__ = [
    "RULES",
    "ConformanceOptions",
    "Frame",
    "Report",
    "RuleResult",
    "Transcript",
    "judge",
    "record",
    "run_conformance",
    "run_conformance_sync",
]

T = SignalType
RULES = (
    "envelope",
    "discover",
    "register",
    "heartbeat",
    "task_reply",
    "routed_task",
    "finalize",
    "stop",
    "deregister",
)
ENVELOPE_KEYS = ("v", "id", "trace_id", "parent_id", "type", "directed", "ts", "payload", "meta")
REPLIES = frozenset({T.AGENT_OUTPUT, T.CLARIFICATION, T.PERMISSION, T.ERROR})


@attrs.frozen
class ConformanceOptions:
    """How long to wait for what, and what to send."""

    timeout_s: float = 5.0
    #: DISCOVER answers have no end marker: how long to collect them.
    discover_wait_s: float = 1.0
    input: dict[str, Any] = attrs.Factory(lambda: {"prompt": "conformance check"})
    #: Input that keeps a neuron busy long enough to be STOPped (default: ``input``).
    slow_input: dict[str, Any] | None = None
    #: How long after the slow TASK the STOP goes out.
    stop_after_s: float = 0.3
    #: How long to watch for a reply that should not come after STOPPED.
    quiet_s: float = 0.5
    #: Wait this long for a HEARTBEAT if none came during the run (0: do not wait).
    heartbeat_wait_s: float = 0.0
    #: Neurons to probe (default: every neuron that answered DISCOVER).
    neurons: tuple[str, ...] = ()
    #: Command of a worker to start (it gets COSMO_SYNAPSE_URL/SYNAPSE_URL and COSMO_NAMESPACE)
    #: and terminate at the end, to see its REGISTER and DEREGISTER.
    spawn: str | None = None


@attrs.frozen
class Frame:
    """One frame on the bus: seconds since the start, subject, the text as sent, and if we sent it."""

    t: float
    subject: str
    text: str
    mine: bool = False
    probe: str | None = None

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"t": round(self.t, 4), "subject": self.subject, "frame": self.text}
        if self.mine:
            data["mine"] = True
        if self.probe:
            data["probe"] = self.probe
        return data


@attrs.define
class Transcript:
    """Everything a conformance run saw; JSON Lines on disk (a header line, then one frame a line)."""

    url: str
    namespace: str
    frames: list[Frame] = attrs.Factory(list)
    spawned: bool = False

    def dumps(self) -> str:
        header = {"conformance": 1, "url": self.url, "namespace": self.namespace, "spawned": self.spawned}
        lines = [json.dumps(header)] + [json.dumps(f.to_json()) for f in self.frames]
        return "\n".join(lines) + "\n"

    def save(self, path: str | Path) -> None:
        Path(path).write_text(self.dumps(), encoding="utf-8")

    @classmethod
    def loads(cls, text: str) -> Transcript:
        lines = [json.loads(line) for line in text.splitlines() if line.strip()]
        if not lines or lines[0].get("conformance") != 1:
            raise ValueError("not a conformance transcript (first line must be its header)")
        head = lines[0]
        frames = [
            Frame(float(d["t"]), str(d["subject"]), str(d["frame"]), bool(d.get("mine")), d.get("probe"))
            for d in lines[1:]
        ]
        return cls(str(head["url"]), str(head["namespace"]), frames, bool(head.get("spawned")))

    @classmethod
    def load(cls, path: str | Path) -> Transcript:
        return cls.loads(Path(path).read_text(encoding="utf-8"))


@attrs.frozen
class RuleResult:
    rule: str
    outcome: str  # "pass" | "fail" | "skip"
    detail: str = ""


@attrs.frozen
class Report:
    url: str
    namespace: str
    results: tuple[RuleResult, ...]
    frames: int

    @property
    def passed(self) -> bool:
        """No rule failed (skips are not failures)."""
        return all(r.outcome != "fail" for r in self.results)

    def result(self, rule: str) -> RuleResult:
        return next(r for r in self.results if r.rule == rule)

    def to_json(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "namespace": self.namespace,
            "passed": self.passed,
            "frames": self.frames,
            "rules": [attrs.asdict(r) for r in self.results],
        }

    def render(self) -> str:
        width = max(len(r) for r in RULES)
        lines = [f"conformance of {self.url} (namespace {self.namespace}), {self.frames} frames"]
        for r in self.results:
            mark = {"pass": "PASS", "fail": "FAIL", "skip": "skip"}[r.outcome]
            lines.append(f"  {mark}  {r.rule:<{width}}  {r.detail}".rstrip())
        counts = {o: sum(r.outcome == o for r in self.results) for o in ("pass", "fail", "skip")}
        lines.append(f"{counts['pass']} passed, {counts['fail']} failed, {counts['skip']} skipped")
        return "\n".join(lines)


# -- recording ---------------------------------------------------------------------------------------


def _decode(text: str) -> Signal | None:
    try:
        return decode_signal(text)
    except SignalDecodeError:
        return None


class _Recorder:
    """The frames seen so far, decoded once, with a way to wait for a condition on them."""

    def __init__(self, tap: FrameTap, namespace: str) -> None:
        self.tap = tap
        self.namespace = namespace
        self.frames: list[Frame] = []
        self.signals: list[Signal | None] = []
        self.start = anyio.current_time()
        self._sent: dict[str, str] = {}  # id of each probe we published -> its label
        self._changed = anyio.Event()

    async def collect(self) -> None:
        async for subject, text in self.tap.received:
            sig = _decode(text)
            probe = self._sent.get(sig.id) if sig is not None else None
            self.frames.append(
                Frame(anyio.current_time() - self.start, subject, text, probe is not None, probe)
            )
            self.signals.append(sig)
            self._changed.set()
            self._changed = anyio.Event()

    async def send(self, sig: Signal, probe: str) -> Signal:
        self._sent[sig.id] = probe
        await self.tap.publish_signal(signal_subject(self.namespace, sig), sig)
        return sig

    def seen(self) -> list[Signal]:
        return [s for s in self.signals if s is not None]

    async def until(self, check: Callable[[list[Signal]], bool], timeout_s: float) -> bool:
        """Wait until *check(signals)* holds; False after *timeout_s*."""
        with anyio.move_on_after(timeout_s):
            while not check(self.seen()):
                await self._changed.wait()
            return True
        return False


def _reply_to(task: Signal) -> Callable[[list[Signal]], bool]:
    return lambda sigs: any(s.type in REPLIES and s.parent_id == task.id for s in sigs)


async def _probe_neuron(rec: _Recorder, neuron: str, caps: list[str], opts: ConformanceOptions) -> None:
    timeout = opts.timeout_s
    task = await rec.send(
        Signal(type=T.TASK, directed=Directed(neuron), payload={"input": opts.input}), f"task_reply:{neuron}"
    )
    await rec.until(_reply_to(task), timeout)
    if caps:
        routed = await rec.send(
            Signal(type=T.TASK, payload={"input": opts.input, "capabilities": sorted(caps)}),
            f"routed_task:{neuron}",
        )
        await rec.until(_reply_to(routed), timeout)
    final = await rec.send(
        Signal(type=T.TASK, directed=Directed(neuron), payload={"input": opts.input, "finalize": True}),
        f"finalize:{neuron}",
    )

    def concluded(sigs: list[Signal]) -> bool:
        replies = [s for s in sigs if s.type in REPLIES and s.parent_id == final.id]
        if not replies:
            return False
        if replies[0].type is not T.AGENT_OUTPUT:
            return True
        return any(s.type is T.FINAL and s.parent_id == replies[0].id for s in sigs)

    await rec.until(concluded, timeout)
    slow = await rec.send(
        Signal(type=T.TASK, directed=Directed(neuron), payload={"input": opts.slow_input or opts.input}),
        f"stop_task:{neuron}",
    )
    if await rec.until(_reply_to(slow), opts.stop_after_s):
        return  # answered before it could be stopped: the stop rule says so
    stop = await rec.send(
        Signal(type=T.STOP, trace_id=slow.trace_id, payload={"rollback": False, "reason": "conformance"}),
        f"stop:{neuron}",
    )
    await rec.until(lambda sigs: any(s.type is T.STOPPED and s.parent_id == stop.id for s in sigs), timeout)
    await anyio.sleep(opts.quiet_s)  # allowed: watching for a reply that must not come


async def _spawned(url: str, namespace: str, opts: ConformanceOptions) -> Any:
    assert opts.spawn is not None
    env = {**os.environ, "COSMO_SYNAPSE_URL": url, "SYNAPSE_URL": url, "COSMO_NAMESPACE": namespace}
    return await anyio.open_process(shlex.split(opts.spawn), env=env, stdout=None, stderr=None)


async def record(url: str | Synapse, namespace: str, options: ConformanceOptions | None = None) -> Transcript:
    """Probe the agents on *url*'s *namespace*; the transcript of everything seen."""
    opts = options or ConformanceOptions()
    where = url if isinstance(url, str) else getattr(url, "url", type(url).__name__)
    proc: Any = None
    frames: list[Frame] = []
    async with open_tap(url, namespace, timeout_s=opts.timeout_s) as tap, anyio.create_task_group() as tg:
        rec = _Recorder(tap, namespace)
        frames = rec.frames
        tg.start_soon(rec.collect)
        try:
            proc = await _spawned(where, namespace, opts) if opts.spawn else None
            if proc is not None:
                await rec.until(lambda sigs: any(s.type is T.REGISTER for s in sigs), opts.timeout_s * 2)
            await rec.send(Signal(type=T.DISCOVER, payload={}), "discover")
            await anyio.sleep(opts.discover_wait_s)  # allowed: DISCOVER answers have no end marker
            registered = _neurons(rec.seen())
            for neuron in opts.neurons or tuple(registered):
                await _probe_neuron(rec, neuron, registered.get(neuron, []), opts)
            if opts.heartbeat_wait_s > 0:
                await rec.until(lambda sigs: any(s.type is T.HEARTBEAT for s in sigs), opts.heartbeat_wait_s)
            if proc is not None:
                proc.send_signal(signals.SIGTERM)
                await rec.until(
                    lambda sigs: set(registered) <= {s.neuron for s in sigs if s.type is T.DEREGISTER},
                    opts.timeout_s * 2,  # like its start: a process shutting down on a busy host
                )
        finally:
            if proc is not None:
                with anyio.CancelScope(shield=True), anyio.move_on_after(opts.timeout_s):
                    await proc.wait()
                if proc.returncode is None:
                    proc.kill()
                    await proc.aclose()
                else:
                    await proc.aclose()
            tg.cancel_scope.cancel()
    return Transcript(where, namespace, frames, spawned=proc is not None)


def _neurons(sigs: Iterable[Signal]) -> dict[str, list[str]]:
    """Neuron id -> capabilities, from REGISTERs (engrams and effectors left out)."""
    out: dict[str, list[str]] = {}
    for s in sigs:
        if s.type is T.REGISTER and s.neuron and s.payload.get("role", "neuron") == "neuron":
            caps = s.payload.get("capabilities")
            out[s.neuron] = [str(c) for c in caps] if isinstance(caps, list) else []
    return out


# -- judging -----------------------------------------------------------------------------------------


class _Judge:
    def __init__(self, transcript: Transcript) -> None:
        self.t = transcript
        self.decoded = [(f, _decode(f.text)) for f in transcript.frames]
        self.theirs = [(f, s) for f, s in self.decoded if not f.mine and s is not None]
        self.probes = {f.probe: s for f, s in self.decoded if f.probe and s is not None}
        self.registered = _neurons(s for _, s in self.theirs)

    def probed(self, kind: str) -> dict[str, Signal]:
        return {p.split(":", 1)[1]: s for p, s in self.probes.items() if p.startswith(kind + ":")}

    def after(self, sig: Signal) -> list[Signal]:
        seen = False
        out = []
        for _, s in self.decoded:
            if s is None:
                continue
            if s.id == sig.id:
                seen = True
            elif seen:
                out.append(s)
        return out

    # -- rules ------------------------------------------------------------------------------------
    def envelope(self) -> RuleResult:
        problems = []
        for f, _ in self.decoded:
            if f.mine:
                continue
            try:
                raw = json.loads(f.text)
                decode_signal(f.text, strict=True)
            except (ValueError, SignalDecodeError) as exc:
                problems.append(f"{f.subject}: {exc}")
                continue
            missing = [k for k in ENVELOPE_KEYS if k not in raw]
            if missing:
                problems.append(f"{f.subject}: a frame without {', '.join(missing)}")
            elif raw["v"] != "1":
                problems.append(f"{f.subject}: v is {raw['v']!r}, a 1.x peer writes '1'")
        if not any(not f.mine for f, _ in self.decoded):
            return RuleResult("envelope", "skip", "no frame from any peer")
        if problems:
            return RuleResult("envelope", "fail", "; ".join(problems[:5]))
        return RuleResult("envelope", "pass", f"{sum(not f.mine for f, _ in self.decoded)} frames")

    def discover(self) -> RuleResult:
        probe = self.probes.get("discover")
        if probe is None:
            return RuleResult("discover", "skip", "no DISCOVER was sent")
        answers = {s.neuron for s in self.after(probe) if s.type is T.REGISTER and s.neuron}
        if not answers:
            return RuleResult("discover", "fail", "nobody answered DISCOVER with a REGISTER")
        return RuleResult("discover", "pass", f"answered by {', '.join(sorted(answers))}")

    def register(self) -> RuleResult:
        regs = [s for _, s in self.theirs if s.type is T.REGISTER]
        if not regs:
            return RuleResult("register", "skip", "no REGISTER seen")
        problems = []
        for s in regs:
            role = s.payload.get("role")
            caps = s.payload.get("capabilities")
            if not s.neuron:
                problems.append("a REGISTER without directed.id")
            elif role not in ("neuron", "engram", "effector"):
                problems.append(f"REGISTER of {s.neuron}: payload.role is {role!r}")
            elif not isinstance(caps, list) or not all(isinstance(c, str) for c in caps):
                problems.append(f"REGISTER of {s.neuron}: payload.capabilities is not a list of strings")
            elif s.directed is not None and sorted(s.directed.capabilities) != sorted(caps):
                problems.append(
                    f"REGISTER of {s.neuron}: directed.capabilities differ from payload.capabilities"
                )
            elif s.parent_id is not None:
                problems.append(f"REGISTER of {s.neuron}: parent_id is set (management traffic has none)")
        traces = [s.trace_id for s in regs]
        if len(set(traces)) != len(traces):
            problems.append("two REGISTERs share a trace (each must start a new one)")
        if problems:
            return RuleResult("register", "fail", "; ".join(sorted(set(problems))[:5]))
        return RuleResult(
            "register", "pass", f"{len(regs)} REGISTERs of {', '.join(sorted(self.registered))}"
        )

    def heartbeat(self) -> RuleResult:
        beats = [s for _, s in self.theirs if s.type is T.HEARTBEAT]
        if not beats:
            return RuleResult("heartbeat", "skip", "no HEARTBEAT seen (wait for one with --heartbeat-wait)")
        bad = [s for s in beats if not s.neuron or not isinstance(s.payload.get("status"), str)]
        if bad:
            return RuleResult("heartbeat", "fail", "a HEARTBEAT without directed.id or a status string")
        return RuleResult("heartbeat", "pass", f"{len(beats)} HEARTBEATs")

    def _one_reply(self, task: Signal, neuron: str | None) -> tuple[Signal | None, str | None]:
        replies = [s for s in self.after(task) if s.type in REPLIES and s.parent_id == task.id]
        if not replies:
            return None, f"no reply to the TASK for {neuron or 'its capabilities'}"
        if len(replies) > 1:
            return None, f"{len(replies)} replies to one TASK"
        r = replies[0]
        if r.trace_id != task.trace_id:
            return None, f"the reply of {r.neuron} is on another trace"
        if neuron and r.neuron != neuron:
            return None, f"the reply to a TASK for {neuron} comes from {r.neuron!r}"
        problem = _payload_problem(r)
        return (None, f"{r.type.value} from {r.neuron}: {problem}") if problem else (r, None)

    def task_reply(self) -> RuleResult:
        tasks = self.probed("task_reply")
        if not tasks:
            return RuleResult("task_reply", "skip", "no neuron to send a TASK to")
        problems = [p for n, task in tasks.items() if (p := self._one_reply(task, n)[1])]
        if problems:
            return RuleResult("task_reply", "fail", "; ".join(problems))
        return RuleResult("task_reply", "pass", f"{', '.join(sorted(tasks))} replied, parented to the TASK")

    def routed_task(self) -> RuleResult:
        tasks = self.probed("routed_task")
        if not tasks:
            return RuleResult("routed_task", "skip", "no neuron announced capabilities")
        problems = []
        for task in tasks.values():
            reply, problem = self._one_reply(task, None)
            if problem:
                problems.append(problem)
            elif reply is not None and reply.neuron in self.registered:
                caps = set(task.payload.get("capabilities") or ())
                if not caps <= set(self.registered[reply.neuron]):
                    problems.append(f"{reply.neuron} answered a TASK for capabilities it did not announce")
        if problems:
            return RuleResult("routed_task", "fail", "; ".join(problems))
        return RuleResult("routed_task", "pass", f"{len(tasks)} capability-routed TASKs answered once")

    def finalize(self) -> RuleResult:
        tasks = self.probed("finalize")
        if not tasks:
            return RuleResult("finalize", "skip", "no neuron to send a TASK to")
        problems = []
        for n, task in tasks.items():
            reply, problem = self._one_reply(task, n)
            if reply is None:
                problems.append(problem or "no reply")
                continue
            finals = [s for s in self.after(task) if s.trace_id == task.trace_id and s.type is T.FINAL]
            if reply.type is not T.AGENT_OUTPUT:
                if finals:
                    problems.append(f"{n} promoted a {reply.type.value} to FINAL (only AGENT_OUTPUT is)")
                continue
            if len(finals) != 1:
                problems.append(f"{n}: {len(finals)} FINALs for a finalize TASK, expected 1")
            elif finals[0].parent_id != reply.id:
                problems.append(f"{n}: the FINAL is not parented to its AGENT_OUTPUT")
            elif finals[0].payload.get("result") != reply.payload.get("output"):
                problems.append(f"{n}: FINAL.result differs from the AGENT_OUTPUT's output")
        if problems:
            return RuleResult("finalize", "fail", "; ".join(problems))
        return RuleResult("finalize", "pass", "AGENT_OUTPUT then one FINAL parented to it")

    def stop(self) -> RuleResult:
        slow = self.probed("stop_task")
        stops = self.probed("stop")
        if not slow:
            return RuleResult("stop", "skip", "no neuron to send a TASK to")
        if not stops:
            return RuleResult(
                "stop", "skip", "every TASK was answered before a STOP could reach it (--slow-input)"
            )
        problems = []
        for n, stop in stops.items():
            later = self.after(stop)
            acks = [s for s in later if s.type is T.STOPPED and s.parent_id == stop.id]
            if not acks:
                problems.append(f"no STOPPED for the STOP of {n}'s running TASK")
                continue
            ack = acks[0]
            pay = ack.payload
            if ack.trace_id != stop.trace_id:
                problems.append(f"the STOPPED for {n} is on another trace")
            elif not (
                isinstance(pay.get("rolled_back"), bool)
                and isinstance(pay.get("cancelled"), int)
                and isinstance(pay.get("compensated"), int)
            ):
                problems.append(f"the STOPPED for {n} lacks rolled_back/cancelled/compensated")
            elif pay["cancelled"] < 1 and not any(
                s.type is T.STOPPED and s.payload.get("cancelled") for s in acks
            ):
                problems.append(f"no STOPPED for {n} says it cancelled the running TASK")
            task = slow[n]
            late = [
                s for s in self.after(ack) if s.trace_id == task.trace_id and s.type in REPLIES | {T.FINAL}
            ]
            if late:
                problems.append(f"{n} published {late[0].type.value} on the trace after STOPPED")
        if problems:
            return RuleResult("stop", "fail", "; ".join(problems))
        return RuleResult("stop", "pass", "STOPPED parented to the STOP, nothing after it")

    def deregister(self) -> RuleResult:
        if not self.t.spawned:
            return RuleResult("deregister", "skip", "needs a worker the check starts and stops (--spawn)")
        gone = {s.neuron for _, s in self.theirs if s.type is T.DEREGISTER and s.neuron}
        missing = sorted(set(self.registered) - gone)
        if missing:
            return RuleResult(
                "deregister", "fail", f"no DEREGISTER from {', '.join(missing)} when it stopped"
            )
        return RuleResult("deregister", "pass", f"{', '.join(sorted(gone))} deregistered on SIGTERM")


def _payload_problem(sig: Signal) -> str | None:
    p = sig.payload
    if sig.type is T.AGENT_OUTPUT and not isinstance(p.get("output"), dict):
        return "payload.output is not an object"
    if sig.type is T.ERROR and not (
        isinstance(p.get("code"), str)
        and isinstance(p.get("message"), str)
        and isinstance(p.get("recoverable"), bool)
    ):
        return "payload needs code, message (strings) and recoverable (bool)"
    if sig.type is T.CLARIFICATION and not isinstance(p.get("question"), str):
        return "payload.question is not a string"
    if sig.type is T.PERMISSION and not isinstance(p.get("action"), str):
        return "payload.action is not a string"
    return None


def judge(transcript: Transcript) -> Report:
    """Decide every rule from *transcript* alone."""
    j = _Judge(transcript)
    results = tuple(getattr(j, rule)() for rule in RULES)
    return Report(transcript.url, transcript.namespace, results, len(transcript.frames))


async def run_conformance(
    url: str | Synapse, namespace: str, options: ConformanceOptions | None = None, **kw: Any
) -> Report:
    """Record and judge in one go (keywords build the options)."""
    return judge(await record(url, namespace, options or ConformanceOptions(**kw)))


def run_conformance_sync(url: str, namespace: str, *, backend: str = "asyncio", **kw: Any) -> Report:
    """:func:`run_conformance` from synchronous code (its own event loop)."""
    return anyio.run(lambda: run_conformance(url, namespace, **kw), backend=backend)
