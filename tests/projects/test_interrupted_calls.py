"""Calls cut short while the server works on them leave nothing half done and every later call working."""

from __future__ import annotations

import re
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor

import grpc

from hishamos.projects.v1 import story_pb2, story_pb2_grpc
from hishamos_devstack.stack import Stack
from tests.conftest import Channels, Tenant
from tests.db import superuser
from tests.projects.support import create_project

CREATE_STORY = "/hishamos.projects.v1.StoryService/CreateStory"


def cancelled_creates(stack: Stack) -> float:
    """How many CreateStory calls the projects service saw cancelled while it worked on them."""
    url = f"http://127.0.0.1:{stack.ports.metrics['projects']}/metrics"
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    pattern = rf'grpc_server_handled_total{{grpc_code="CANCELLED",grpc_method="{CREATE_STORY}"}} (\S+)'
    found = re.search(pattern, text)
    return float(found.group(1)) if found else 0.0


def test_creates_cut_short_mid_transaction_then_retried_land_exactly_once(
    stack: Stack, channels: Channels, tenant: Tenant
) -> None:
    made = create_project(channels, tenant)
    stories = story_pb2_grpc.StoryServiceStub(channels.direct("projects"))
    requests = [
        story_pb2.CreateStoryRequest(
            parent=made.name, story=story_pb2.Story(title=f"story {i}", labels=["cut"]), request_id=str(uuid.uuid4())
        )
        for i in range(24)
    ]
    before = cancelled_creates(stack)

    def hurried(request: story_pb2.CreateStoryRequest) -> grpc.StatusCode:
        try:
            stories.CreateStory(request, metadata=tenant.metadata, timeout=0.5)
        except grpc.RpcError as exc:
            return exc.code()  # type: ignore[no-any-return]
        return grpc.StatusCode.OK

    # A transaction holding the project row makes every create wait inside its own transaction,
    # until its deadline cuts it off there; more creates than the service has connections.
    with superuser(stack, "projects") as holder, holder.transaction():
        holder.execute("SELECT 1 FROM projects WHERE id = %s FOR UPDATE", (made.name.rsplit("/", 1)[1],))
        with ThreadPoolExecutor(max_workers=len(requests)) as pool:
            codes = list(pool.map(hurried, requests))
    assert set(codes) == {grpc.StatusCode.DEADLINE_EXCEEDED}
    assert cancelled_creates(stack) > before  # the service itself abandoned them, not only the clients
    # Retried with their request ids, each is made once, on connections as sound as before.
    retried = [stories.CreateStory(r, metadata=tenant.metadata, timeout=10).story for r in requests]
    assert [s.title for s in retried] == [r.story.title for r in requests]
    listed = stories.ListStories(
        story_pb2.ListStoriesRequest(parent=made.name, page_size=100), metadata=tenant.metadata, timeout=10
    )
    assert sorted(s.name for s in listed.stories) == sorted(s.name for s in retried)
