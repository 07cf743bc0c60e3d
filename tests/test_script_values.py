"""Pipelines send values as parameters (`hishamos_kit.db.ScriptConnections.run`): whatever a value
holds, PostgreSQL reads back exactly that value, and nothing of it runs as SQL."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import grpc
import psycopg
import pytest
from psycopg.types.json import Jsonb

from hishamos.projects.v1 import story_pb2, story_pb2_grpc
from hishamos_devstack.stack import Stack
from hishamos_kit.db import Database, Prepared
from hishamos_kit.server import refused_value
from tests.conftest import Channels, Tenant
from tests.db import superuser
from tests.errors import failure
from tests.projects.support import create_project

HOSTILE_TEXTS = [
    "it's",
    "''",
    "back\\slash\\' and \\",
    "'); DROP TABLE stories; --",
    "$$ $1 %(name)s %s %% :name ?",
    "ünïcødé ✓ 𝄞 中文",
    "-- not a comment",
    "",
    "\n\t\r",
]


def round_trip(stack: Stack, values: dict[str, Any], types: dict[str, str]) -> dict[str, Any]:
    async def run() -> dict[str, Any]:
        db = Database(stack.databases["projects"].app_url, pool_size=1)
        try:
            columns = ", ".join(f"%({name})s::{types[name]}" for name in values)
            (rows,) = await db.script((Prepared(f"round_trip_{len(values)}", f"SELECT {columns}"), values))
        finally:
            await db.close()
        return dict(zip(values, rows[0], strict=True))

    return asyncio.run(run())


def test_texts_come_back_exactly(stack: Stack) -> None:
    values = {f"t{i}": text for i, text in enumerate(HOSTILE_TEXTS)}
    assert round_trip(stack, values, dict.fromkeys(values, "text")) == values


def test_other_types_come_back_exactly(stack: Stack) -> None:
    values: dict[str, Any] = {
        "negative": -5,
        "smallest": -(2**63),
        "largest": 2**63 - 1,
        "yes": True,
        "no": False,
        "nothing": None,
        "id": uuid.uuid4(),
        "when": datetime(2026, 11, 23, 4, 5, 6, 789012, tzinfo=UTC),
        "day": date(2026, 2, 28),
        "amount": Decimal("-12.50"),
        "labels": ["a'b", 'c"d', "e\\f", "{g,h}", "NULL", ""],
        "no_labels": [],
        "document": Jsonb({"a'b": ["c\\d", 'e"f', None, 1.5, {"$$": "--"}]}),
    }
    types = {
        "negative": "int8",
        "smallest": "int8",
        "largest": "int8",
        "yes": "bool",
        "no": "bool",
        "nothing": "text",
        "id": "uuid",
        "when": "timestamptz",
        "day": "date",
        "amount": "numeric",
        "labels": "text[]",
        "no_labels": "text[]",
        "document": "jsonb",
    }
    assert round_trip(stack, values, types) == {**values, "document": values["document"].obj}


def test_a_connection_keeps_its_most_recently_used_statements(stack: Stack) -> None:
    async def run() -> list[int]:
        db = Database(stack.databases["projects"].app_url, pool_size=1)
        db.scripts.PREPARED_PER_CONNECTION = 3
        statements = [Prepared(f"kept_{i}", f"SELECT {i} + %s") for i in range(5)]
        try:
            answers = [(await db.script((s, (1,))))[0][0][0] for s in statements * 2]
            (rows,) = await db.script((Prepared("held", "SELECT count(*) FROM pg_prepared_statements"), ()))
        finally:
            await db.close()
        return [*answers, rows[0][0]]

    # Each statement answered right after the others evicted it; the connection holds no more than it keeps.
    assert asyncio.run(run()) == [1, 2, 3, 4, 5, 1, 2, 3, 4, 5, 3]


def test_a_pipeline_is_one_transaction(stack: Stack) -> None:
    """Its steps commit together at its end, or not at all when one fails."""
    app_role = stack.databases["projects"].app
    insert = Prepared("probe_insert", "INSERT INTO pipeline_probe VALUES (%s)")

    async def run(*steps: tuple[Prepared, tuple[Any, ...]]) -> None:
        db = Database(stack.databases["projects"].app_url, pool_size=1)
        try:
            await db.script(*steps)
        finally:
            await db.close()

    with superuser(stack, "projects") as conn:
        conn.execute("CREATE TABLE pipeline_probe (note text)")
        conn.execute(f'GRANT INSERT, SELECT ON pipeline_probe TO "{app_role}"')
        try:
            asyncio.run(run((insert, ("kept",)), (Prepared("probe_fine", "SELECT 1"), ())))
            with pytest.raises(psycopg.errors.DivisionByZero):
                asyncio.run(run((insert, ("undone",)), (Prepared("probe_fail", "SELECT 1 / 0"), ())))
            assert conn.execute("SELECT note FROM pipeline_probe").fetchall() == [("kept",)]
        finally:
            conn.execute("DROP TABLE pipeline_probe")


@pytest.mark.parametrize("title", HOSTILE_TEXTS[:6])
def test_a_story_keeps_its_title_whatever_it_holds(channels: Channels, tenant: Tenant, title: str) -> None:
    stories = story_pb2_grpc.StoryServiceStub(channels.envoy())
    project = create_project(channels, tenant).name
    made = stories.CreateStory(
        story_pb2.CreateStoryRequest(parent=project, story=story_pb2.Story(title=f"x{title}", labels=[title or "l"])),
        metadata=tenant.metadata,
    ).story
    found = stories.GetStory(story_pb2.GetStoryRequest(name=made.name), metadata=tenant.metadata).story
    assert (found.title, list(found.labels)) == (f"x{title}".strip(), [title or "l"])


def test_a_nul_character_is_a_field_violation(channels: Channels, tenant: Tenant) -> None:
    stories = story_pb2_grpc.StoryServiceStub(channels.envoy())
    project = create_project(channels, tenant).name
    request = story_pb2.CreateStoryRequest(parent=project, story=story_pb2.Story(title="a\x00b"))
    refused = failure(lambda: stories.CreateStory(request, metadata=tenant.metadata))
    assert refused.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "story.title" in refused.violations
    listed = stories.ListStories(story_pb2.ListStoriesRequest(parent=project), metadata=tenant.metadata)
    assert list(listed.stories) == []


def test_a_nul_anywhere_is_invalid_argument_and_changes_nothing(channels: Channels, tenant: Tenant) -> None:
    stories = story_pb2_grpc.StoryServiceStub(channels.envoy())
    project = create_project(channels, tenant).name
    in_label = story_pb2.Story(title="t", labels=["a\x00"])
    in_custom_field = story_pb2.Story(title="t")
    in_custom_field.custom_fields.update({"note": "a\x00b"})
    for story, field in ((in_label, "story.labels[0]"), (in_custom_field, "story.custom_fields")):
        request = story_pb2.CreateStoryRequest(parent=project, story=story)
        refused = failure(lambda r=request: stories.CreateStory(r, metadata=tenant.metadata))
        assert (refused.code, list(refused.violations)) == (grpc.StatusCode.INVALID_ARGUMENT, [field])
    listed = stories.ListStories(story_pb2.ListStoriesRequest(parent=project), metadata=tenant.metadata)
    assert list(listed.stories) == []


def test_only_a_value_the_database_cannot_store_is_the_callers_fault() -> None:
    assert refused_value(psycopg.errors.UntranslatableCharacter("\\u0000 cannot be converted to text"))
    assert refused_value(psycopg.DataError("PostgreSQL text fields cannot contain NUL (0x00) bytes"))
    assert not refused_value(psycopg.errors.DivisionByZero("division by zero"))  # the server's mistake: INTERNAL
    assert not refused_value(ValueError("not a database error"))
