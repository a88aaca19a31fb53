"""Properties of the parser, on mutated real captures and on random JSON.

``parse_status`` raises nothing but ``ParseError``, whatever it is given; and
what it accepts can be stored and rendered. Hypothesis runs derandomized and
without its example database, so that CI sees the same examples every run.
"""

from __future__ import annotations

import functools
import itertools
from datetime import UTC, datetime, timedelta

import orjson
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from recorder.db import make_engine, make_sessionmaker, session_scope
from recorder.parser import ParseError, Status, parse_status
from recorder.settings import Settings
from recorder.store import get_or_create_source, store_body
from tests.conftest import CAPTURES

pytestmark = pytest.mark.skipif(not CAPTURES, reason="the real captures are absent")

REPRODUCIBLE = settings(
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.function_scoped_fixture,
    ],
)
# Captures small enough to store and render many times within seconds.
SMALL = [path for path in CAPTURES if path.stat().st_size < 120_000]

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(st.characters(exclude_categories=("Cs",)), max_size=20)
    | st.sampled_from(["null", "None", "true", "false", "", "0", "-1", "1e999"])
)
json_values = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=12,
)
unicode_text = st.text(
    st.characters(exclude_categories=("Cs",)), min_size=1, max_size=40
) | st.sampled_from(["\x00", "\u202e", "\ufeff", "🚦" * 50, "x" * 3000, "\n\r\t"])


@functools.cache
def raw(path) -> bytes:
    return path.read_bytes()


def document(path) -> dict:
    """A fresh copy of a capture's document (decoding is the fastest copy)."""
    return orjson.loads(raw(path))


@functools.cache
def places(path) -> list[tuple]:
    """The path from the root to every value of a capture, containers first."""
    found = []

    def walk(node, trail):
        if isinstance(node, dict):
            items = node.items()
        elif isinstance(node, list):
            items = enumerate(node)
        else:
            return
        for key, value in items:
            found.append((*trail, key))
            walk(value, (*trail, key))

    walk(document(path), ())
    # Containers of pipelines, queues and heads first, for shallow mutations.
    return sorted(found, key=len)


def parent_of(root, trail):
    """The container holding ``trail``'s last step, or None if it is gone."""
    node = root
    for key in trail[:-1]:
        try:
            node = node[key]
        except (KeyError, IndexError, TypeError):
            return None
    return node if isinstance(node, dict | list) else None


@st.composite
def mutated_captures(draw, captures=tuple(CAPTURES)):
    """A real capture with a few keys dropped, values replaced, lists cut."""
    path = draw(st.sampled_from(captures))
    root = document(path)
    candidates = places(path)
    for _ in range(draw(st.integers(1, 6))):
        # Shallow places are drawn more often: they change more of the tree.
        depth_bias = draw(st.integers(0, len(candidates) - 1))
        trail = candidates[draw(st.integers(0, depth_bias))]
        container = parent_of(root, trail)
        key = trail[-1]
        if container is None or key not in (
            container if isinstance(container, dict) else range(len(container))
        ):
            continue
        action = draw(st.sampled_from(["drop", "replace", "truncate", "unicode"]))
        value = container[key]
        if action == "drop":
            del container[key]
        elif action == "truncate" and isinstance(value, list):
            del value[draw(st.integers(0, len(value))) :]
        elif action == "unicode":
            container[key] = draw(unicode_text)
        else:
            container[key] = draw(json_values)
    return orjson.dumps(root)


@st.composite
def status_shaped(draw):
    """Random JSON in the shape of a status: pipelines, queues, heads, items."""
    item = st.dictionaries(
        st.sampled_from(
            ["id", "project", "live", "jobs", "refs", "enqueue_time", "owner", "url"]
        ),
        json_values
        | st.lists(st.dictionaries(st.sampled_from(["name", "url", "uuid"]), scalars)),
        max_size=6,
    )
    queue = st.fixed_dictionaries(
        {
            "name": json_values,
            "heads": st.lists(st.lists(item | json_values), max_size=3),
        }
    )
    pipeline = st.fixed_dictionaries(
        {
            "name": json_values,
            "change_queues": st.lists(queue | json_values, max_size=3),
        }
    )
    pipelines = st.lists(pipeline | json_values, max_size=3) | json_values
    return orjson.dumps(draw(st.fixed_dictionaries({"pipelines": pipelines})))


def parse_or_refuse(body: bytes) -> Status | None:
    """The status, or None when the parser refused it with its own error."""
    try:
        status = parse_status(body)
    except ParseError as error:
        event(f"refused: {str(error).split(':')[0]}")
        return None
    event("accepted")
    return status


@settings(REPRODUCIBLE, max_examples=400)
@given(mutated_captures() | status_shaped() | st.binary(max_size=200))
def test_the_parser_raises_only_its_own_error(body):
    status = parse_or_refuse(body)
    if status is not None:
        status.counts()
        for _pipeline, _queue, item in status.iter_items():
            item.job_counts()
            assert item.key is not None


@pytest.fixture(scope="module")
def renderer(tmp_path_factory):
    """Store a body as a snapshot of a source of its own, then GET its page."""
    from recorder.migrate import upgrade
    from webui import create_app

    url = f"sqlite:///{tmp_path_factory.mktemp('properties') / 'zuul-status.sqlite'}"
    upgrade(url)
    sessions = make_sessionmaker(make_engine(url, writer=True))
    client = create_app(Settings(database_url=url)).test_client()
    counter = itertools.count()

    def store_and_render(body: bytes) -> int:
        number = next(counter)
        source_name = f"property-{number}"
        taken_at = datetime(2026, 1, 5, tzinfo=UTC) + timedelta(seconds=number)
        with session_scope(sessions) as session:
            source = get_or_create_source(
                session, source_name, "https://zuul.example.org/api/tenant/x/status"
            )
            result = store_body(session, source, body, taken_at)
        assert result.outcome == "stored", result.error
        return client.get(f"/?source={source_name}").status_code

    return store_and_render


@settings(REPRODUCIBLE, max_examples=200)
@given(
    body=mutated_captures(tuple(SMALL))
    | status_shaped()
    | json_values.map(orjson.dumps)
)
def test_what_the_parser_accepts_is_stored_and_rendered(body, renderer):
    if parse_or_refuse(body) is None:
        return
    assert renderer(body) == 200
