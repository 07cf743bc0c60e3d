"""PostgreSQL crashes under load: what was acknowledged survives, and the services recover on their own."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from hishamos.projects.v1 import project_pb2, project_pb2_grpc, story_pb2, story_pb2_grpc
from hishamos_devstack.stack import Ports, Stack
from tests.conftest import Tenant, sign_up
from tests.pages import every_page


@pytest.fixture(scope="module")
def own_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A stack of its own: the crash must not reach the connections of other tests' services."""
    with Stack(Path(tmp_path_factory.mktemp("crash")), Ports.free(), progress=lambda _: None) as running:
        yield running


def test_a_crash_loses_no_acknowledged_write_and_the_services_recover(own_stack: Stack) -> None:
    channel = grpc.insecure_channel(f"127.0.0.1:{own_stack.ports.services['projects']}")
    tenant: Tenant = sign_up(grpc.insecure_channel(f"127.0.0.1:{own_stack.ports.services['identity']}"))
    project = (
        project_pb2_grpc.ProjectServiceStub(channel)
        .CreateProject(
            project_pb2.CreateProjectRequest(
                parent=tenant.organization, project=project_pb2.Project(display_name="Crash", slug="crash")
            ),
            metadata=tenant.metadata,
            timeout=10,
        )
        .project
    )
    stories = story_pb2_grpc.StoryServiceStub(channel)
    requests: list[story_pb2.CreateStoryRequest] = []
    answers: dict[str, story_pb2.Story] = {}  # request_id → the story the service acknowledged
    codes: set[grpc.StatusCode] = set()
    stop = threading.Event()
    lock = threading.Lock()

    def writer() -> None:
        while not stop.is_set():
            request = story_pb2.CreateStoryRequest(
                parent=project.name, story=story_pb2.Story(title=f"s-{uuid.uuid4().hex}"), request_id=str(uuid.uuid4())
            )
            with lock:
                requests.append(request)
            try:
                story = stories.CreateStory(request, metadata=tenant.metadata, timeout=10).story
            except grpc.RpcError as exc:
                with lock:
                    codes.add(exc.code())
                time.sleep(0.05)
                continue
            with lock:
                answers[request.request_id] = story

    writers = [threading.Thread(target=writer) for _ in range(8)]
    for thread in writers:
        thread.start()
    try:
        time.sleep(1.0)
        own_stack.postgres.kill()  # every PostgreSQL process killed mid-write (SIGKILL)
        time.sleep(1.0)
        own_stack.postgres.start()  # recovery replays the write-ahead log
        time.sleep(2.0)
    finally:
        stop.set()
        for thread in writers:
            thread.join()

    # The outage was reported as one the caller can retry, never as an internal error.
    assert codes and codes <= {grpc.StatusCode.UNAVAILABLE}, codes
    acknowledged = len(answers)
    assert acknowledged > 0 and len(requests) > acknowledged
    # The services work again without a restart (a pooled connection from before the crash fails
    # once, UNAVAILABLE, and is replaced), and every acknowledged story survived as acknowledged.
    first = next(iter(answers.values()))
    refused = 0
    while True:
        try:
            stories.GetStory(story_pb2.GetStoryRequest(name=first.name), metadata=tenant.metadata, timeout=10)
            break
        except grpc.RpcError as exc:
            assert exc.code() == grpc.StatusCode.UNAVAILABLE and refused < 10, exc  # the pool's size
            refused += 1
    for request_id, story in answers.items():
        found = stories.GetStory(story_pb2.GetStoryRequest(name=story.name), metadata=tenant.metadata, timeout=10)
        assert found.story == story, request_id
    # The requests the crash cut off, retried with their ids, make each story once.
    for request in requests:
        stories.CreateStory(request, metadata=tenant.metadata, timeout=10)
    listing = story_pb2.ListStoriesRequest(parent=project.name, page_size=100)
    listed = every_page(stories.ListStories, listing, "stories", tenant.metadata)
    assert sorted(s.title for s in listed) == sorted(r.story.title for r in requests)
