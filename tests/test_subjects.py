"""Subjects, wildcard matching and the subscription index (protocol §5.1, §5.2)."""

from __future__ import annotations

import itertools
import re
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cosmonapse import Directed, Signal, SignalType
from cosmonapse.subjects import (
    is_wildcard,
    namespace_wildcard,
    signal_subject,
    subject_for,
    subject_matches,
)
from cosmonapse.synapse.index import SubscriptionIndex
from cosmonapse.testing import signals

# -- a reference matcher, written independently: wildcards become a regular expression


def reference_match(pattern: str, subject: str) -> bool:
    """NATS semantics: ``*`` is exactly one token, a final ``>`` one or more tokens."""
    tokens = pattern.split(".")
    parts = []
    for i, tok in enumerate(tokens):
        if tok == ">" and i == len(tokens) - 1:
            parts.append(r"[^.]+(?:\.[^.]+)*")
        elif tok == "*":
            parts.append(r"[^.]+")
        else:
            parts.append(re.escape(tok))
    return re.fullmatch(r"\.".join(parts), subject) is not None


LITERALS = ["a", "b", "TASK", "cosmonapse", "a*", "b>"]  # "a*" and "b>" are literal tokens
subjects = st.lists(st.sampled_from(LITERALS), min_size=1, max_size=5).map(".".join)
patterns = st.builds(
    lambda toks, tail: ".".join(toks + tail),
    st.lists(st.sampled_from([*LITERALS, "*"]), min_size=0, max_size=4),
    st.sampled_from([[], [">"], ["*"], ["a"]]),
).filter(bool)

PROPS = settings(max_examples=300, deadline=None)


@PROPS
@given(patterns, subjects)
def test_matches_like_the_reference(pattern: str, subject: str) -> None:
    assert subject_matches(pattern, subject) == reference_match(pattern, subject)


@PROPS
@given(subjects)
def test_a_literal_pattern_matches_only_itself(subject: str) -> None:
    assert subject_matches(subject, subject)
    assert not subject_matches(subject, subject + ".a")
    assert not subject_matches(subject + ".a", subject)


@PROPS
@given(subjects)
def test_wildcards_cover_what_they_should(subject: str) -> None:
    n = subject.count(".") + 1
    assert subject_matches(">", subject)
    assert subject_matches(".".join(["*"] * n), subject)
    assert not subject_matches(".".join(["*"] * (n + 1)), subject)
    assert not subject_matches(subject + ".>", subject)  # ">" needs at least one token


def test_examples() -> None:
    assert subject_matches("cosmonapse.ns.>", "cosmonapse.ns.TASK")
    assert subject_matches("cosmonapse.ns.>", "cosmonapse.ns.TASK.routed")
    assert not subject_matches("cosmonapse.ns.>", "cosmonapse.ns")
    assert subject_matches("cosmonapse.*.TASK", "cosmonapse.ns.TASK")
    assert not subject_matches("cosmonapse.*.TASK", "cosmonapse.ns.TASK.routed")
    assert not subject_matches("cosmonapse.a*.TASK", "cosmonapse.ab.TASK")  # partial tokens are literal
    assert subject_matches("cosmonapse.a*.TASK", "cosmonapse.a*.TASK")
    # ">" that is not the last token is not a valid pattern: it matches nothing.
    assert not subject_matches("cosmonapse.>.TASK", "cosmonapse.ns.TASK")


def test_is_wildcard() -> None:
    assert is_wildcard("a.*") and is_wildcard("a.>") and is_wildcard(">")
    assert not is_wildcard("a.b") and not is_wildcard("a*.b>")


def test_subject_names() -> None:
    assert subject_for("dev", SignalType.FINAL) == "cosmonapse.dev.FINAL"
    assert subject_for("dev", "TASK", routed=True) == "cosmonapse.dev.TASK.routed"
    assert namespace_wildcard("dev") == "cosmonapse.dev.>"


@pytest.mark.parametrize(
    ("directed", "caps", "subject"),
    [
        (Directed(id="summarizer"), ["summarize"], "cosmonapse.ns.TASK"),  # addressed wins
        (None, ["summarize"], "cosmonapse.ns.TASK.routed"),
        (Directed(type="neuron"), ["summarize"], "cosmonapse.ns.TASK.routed"),
        (None, [], "cosmonapse.ns.TASK"),  # open call
        (None, None, "cosmonapse.ns.TASK"),
        (Directed(id="summarizer"), None, "cosmonapse.ns.TASK"),
    ],
)
def test_task_subject(directed: Directed | None, caps: list[str] | None, subject: str) -> None:
    payload: dict[str, object] = {"input": {}}
    if caps is not None:
        payload["capabilities"] = caps
    assert signal_subject("ns", Signal(type=SignalType.TASK, directed=directed, payload=payload)) == subject


@settings(max_examples=100, deadline=None)
@given(signals())
def test_every_signal_lands_under_the_namespace(sig: Signal) -> None:
    subject = signal_subject("ns", sig)
    assert subject.startswith(f"cosmonapse.ns.{sig.type.value}")
    assert subject_matches(namespace_wildcard("ns"), subject)
    assert subject_matches(f"cosmonapse.ns.{sig.type.value}", subject) != subject.endswith(".routed")


# -- SubscriptionIndex against brute force ------------------------------------

SUBS = st.integers(0, 4)
GROUPS = st.sampled_from([None, None, "g1", "g2"])
ops = st.lists(
    st.one_of(
        st.tuples(st.just("add"), patterns | subjects, SUBS, GROUPS),
        st.tuples(st.just("remove"), patterns | subjects, SUBS, st.none()),
        st.tuples(st.just("query"), subjects, st.none(), st.none()),
    ),
    max_size=40,
)


def _assert_targets(targets: list[int], solo: list[int], groups: dict[str, list[int]]) -> None:
    assert len(targets) == len(solo) + len(groups)
    assert Counter(targets[: len(solo)]) == Counter(solo)
    picks = targets[len(solo) :]
    # Some assignment gives each group one pick drawn from its own matching members.
    names = list(groups)
    assert any(
        all(pick in groups[name] for pick, name in zip(picks, order, strict=True))
        for order in itertools.permutations(names)
    ), (picks, groups)


@settings(max_examples=300, deadline=None)
@given(ops)
def test_index_targets_equal_brute_force(script: list[tuple[str, str, int | None, str | None]]) -> None:
    index: SubscriptionIndex[int] = SubscriptionIndex()
    model: list[tuple[str, int, str | None]] = []
    for op, text, sub, group in script:
        if op == "add":
            assert sub is not None
            index.add(text, sub, group)
            model.append((text, sub, group))
        elif op == "remove":
            assert sub is not None
            index.remove(text, sub)
            model = [m for m in model if (m[0], m[1]) != (text, sub)]
        else:
            solo = [s for p, s, g in model if g is None and reference_match(p, text)]
            groups: dict[str, list[int]] = {}
            for p, s, g in model:
                if g is not None and reference_match(p, text):
                    groups.setdefault(g, []).append(s)
            _assert_targets(index.targets(text), solo, groups)
        assert len(index) == len(model)


def test_cached_answers_follow_changes() -> None:
    index: SubscriptionIndex[str] = SubscriptionIndex()
    index.add("cosmonapse.ns.TASK", "exact")
    assert index.targets("cosmonapse.ns.TASK") == ["exact"]
    index.add("cosmonapse.ns.>", "wild")
    assert sorted(index.targets("cosmonapse.ns.TASK")) == ["exact", "wild"]
    index.remove("cosmonapse.ns.TASK", "exact")
    assert index.targets("cosmonapse.ns.TASK") == ["wild"]
    index.remove("cosmonapse.ns.>", "wild")
    assert index.targets("cosmonapse.ns.TASK") == []
    assert len(index) == 0


def test_removing_one_pattern_keeps_the_others() -> None:
    index: SubscriptionIndex[str] = SubscriptionIndex()
    for pattern in ("a.>", "*.b", "a.b"):
        index.add(pattern, "s")
    index.remove("a.>", "s")
    assert index.targets("a.b") == ["s", "s"]  # "a.b" and "*.b" remain
    assert index.targets("a.c") == []
    assert len(index) == 2


@pytest.mark.parametrize("members", [1, 2, 3, 5])
def test_queue_group_round_robin_is_fair(members: int) -> None:
    index: SubscriptionIndex[str] = SubscriptionIndex()
    names = [f"m{i}" for i in range(members)]
    for i, name in enumerate(names):
        # Members may join through exact or wildcard patterns; it is one group either way.
        index.add("cosmonapse.ns.TASK.routed" if i % 2 else "cosmonapse.ns.TASK.*", name, "caps:x")
    index.add("cosmonapse.ns.>", "observer")
    index.add("cosmonapse.ns.TASK.routed", "other-group", "caps:y")
    rounds = 7
    got: Counter[str] = Counter()
    for _ in range(rounds * members):
        targets = index.targets("cosmonapse.ns.TASK.routed")
        assert len(targets) == 3
        got.update(targets)
    assert got == Counter(
        {**dict.fromkeys(names, rounds), "observer": rounds * members, "other-group": rounds * members}
    )


def test_round_robin_visits_members_in_turn() -> None:
    index: SubscriptionIndex[str] = SubscriptionIndex()
    for name in ("a", "b", "c"):
        index.add("s", name, "g")
    picks = [index.targets("s")[0] for _ in range(6)]
    assert picks[:3] == picks[3:]
    assert sorted(picks[:3]) == ["a", "b", "c"]
