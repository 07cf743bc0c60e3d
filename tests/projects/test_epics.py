from __future__ import annotations

import grpc

from hishamos.projects.v1 import epic_pb2, epic_pb2_grpc, priority_pb2
from tests.conftest import Channels, Tenant
from tests.errors import failure
from tests.projects.support import ProjectChildContract
from tests.standard import Case

Epic = epic_pb2.Epic

EPICS = Case(
    service="projects",
    pb=epic_pb2,
    stub=epic_pb2_grpc.EpicServiceStub,
    kind="Epic",
    field="epic",
    plural="epics",
    valid=lambda i: Epic(title=f"Checkout {i}", description="pay for things", priority=priority_pb2.PRIORITY_HIGH),
    invalid=lambda: Epic(title="", description="d" * 10_001, owner="users/1", priority=9, state=7),  # type: ignore[arg-type]
    invalid_fields={"epic.title", "epic.description", "epic.owner", "epic.priority", "epic.state"},
    update=("title", "Checkout, reworked"),
    filter_true=lambda e: f'title = "{e.title}"',
)


class TestEpicStandardMethods(ProjectChildContract):
    case = EPICS


def api(channels: Channels) -> epic_pb2_grpc.EpicServiceStub:
    return epic_pb2_grpc.EpicServiceStub(channels.direct("projects"))


def create(channels: Channels, team: Tenant, epic: Epic) -> Epic:
    request = epic_pb2.CreateEpicRequest(parent=team.organization, epic=epic)
    return api(channels).CreateEpic(request, metadata=team.metadata, timeout=10).epic


def test_new_epic_is_open_at_medium_priority_and_owned_by_a_user_of_the_organization(
    channels: Channels, tenant: Tenant, other_tenant: Tenant, team: Tenant
) -> None:
    epic = create(channels, team, Epic(title="Search", owner=tenant.user))
    assert (epic.state, epic.priority, epic.owner) == (Epic.STATE_OPEN, priority_pb2.PRIORITY_MEDIUM, tenant.user)
    f = failure(lambda: create(channels, team, Epic(title="Search", owner=other_tenant.user)))
    assert f.code == grpc.StatusCode.INVALID_ARGUMENT and set(f.violations) == {"epic.owner"}


def test_epics_list_by_priority_and_filter_by_state(channels: Channels, team: Tenant) -> None:
    low = create(channels, team, Epic(title="Polish", priority=priority_pb2.PRIORITY_LOW))
    urgent = create(channels, team, Epic(title="Outage", priority=priority_pb2.PRIORITY_CRITICAL))
    normal = create(channels, team, Epic(title="Reports", state=Epic.STATE_IN_PROGRESS))
    by_urgency = api(channels).ListEpics(
        epic_pb2.ListEpicsRequest(parent=team.organization, order_by="priority desc"), metadata=team.metadata
    )
    assert [e.name for e in by_urgency.epics] == [urgent.name, normal.name, low.name]
    for text in ("state = STATE_IN_PROGRESS", "state = in_progress"):
        going = api(channels).ListEpics(
            epic_pb2.ListEpicsRequest(parent=team.organization, filter=text), metadata=team.metadata
        )
        assert [e.name for e in going.epics] == [normal.name]
    urgent_only = api(channels).ListEpics(
        epic_pb2.ListEpicsRequest(parent=team.organization, filter="priority >= PRIORITY_HIGH"), metadata=team.metadata
    )
    assert [e.name for e in urgent_only.epics] == [urgent.name]
