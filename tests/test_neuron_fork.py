"""A Neuron's HTTP pool is not shared with a forked child: the child opens its own."""

from __future__ import annotations

import os

import pytest

from cosmonapse.neuron.httpclient import HttpClient


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_forked_child_gets_its_own_pool() -> None:
    http = HttpClient("test")
    parent_client = http.client()
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: report whether it got a fresh client, then leave at once
        fresh = http.client() is not parent_client
        again = http.client() is http.client()
        os.write(write, b"ok" if fresh and again else b"no")
        os._exit(0)
    os.close(write)
    answer = os.read(read, 2)
    os.close(read)
    os.waitpid(pid, 0)
    assert answer == b"ok"
    assert http.client() is parent_client  # the parent keeps its pool
