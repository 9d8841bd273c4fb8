"""``python -m bench profile`` groups cProfile entries into components: check the grouping."""

from __future__ import annotations

from bench.components import BUS, CORE, IDLE, LOOP, MODEL, SOCKET, classify, split
from bench.profiling import Window, WindowResult

SITE = "/venv/lib/python3.11/site-packages"
CORE_PY = ("/work/wt/x/cosmonapse/core.py", 10, "route")
LOOP_PY = (f"{SITE}/../asyncio/events.py", 80, "_run")


def test_files_and_c_functions_land_in_their_components() -> None:
    assert classify("/work/wt/x/cosmonapse/synapse/dev.py", "publish") == BUS
    assert classify("/work/wt/x/cosmonapse/codec.py", "encode_signal") == MODEL
    assert classify("<attrs generated init cosmonapse.signal.Signal>", "__init__") == MODEL
    assert classify("~", "<method 'send' of '_socket.socket' objects>") == SOCKET
    assert classify("~", "<method 'poll' of 'select.epoll' objects>") == IDLE
    assert classify("~", "<built-in method orjson.dumps>") == MODEL


def test_a_plain_c_function_is_charged_to_its_callers_in_proportion() -> None:
    entries = {
        CORE_PY: (1.0, 5, {}),
        ("~", 0, "<built-in method builtins.len>"): (3.0, 9, {CORE_PY: 2.0, LOOP_PY: 0.5}),
        ("~", 0, "<method 'poll' of 'select.epoll' objects>"): (7.0, 2, {LOOP_PY: 7.0}),
    }
    got = split(entries)
    assert got[CORE] == 3.0  # its own second plus the 2 s of len() it called
    assert got[LOOP] == 1.0  # 0.5 s from the loop's caller + 0.5 s with no caller on record
    assert got[IDLE] == 7.0


def test_a_window_round_trips_through_json_with_its_profile() -> None:
    window = Window(profile=True)
    window.open()
    sum(len(str(i)) for i in range(1000))
    result = window.close()
    assert result.wall_s > 0 and result.entries
    again = WindowResult.from_json(result.to_json())
    assert again.entries == result.entries and again.cpu_s == result.cpu_s
