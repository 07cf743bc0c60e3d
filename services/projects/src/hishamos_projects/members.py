"""Members: who is on a project's team. Work is assigned only to members, and the project's
member_count moves with every membership in the same transaction."""

from __future__ import annotations

from sqlalchemy import case, update
from sqlalchemy.ext.asyncio import AsyncSession

from hishamos.projects.v1 import member_pb2 as pb
from hishamos_kit import validate
from hishamos_kit.auth import require
from hishamos_kit.errors import FailedPrecondition, Violations
from hishamos_kit.listing import Field, ListSpec, parse_int, parse_time
from hishamos_kit.resources import ResourcePath
from hishamos_kit.standard import base_fields
from hishamos_projects import common, directory
from hishamos_projects.children import ChildType
from hishamos_projects.models import Member, Project

ROLES = validate.EnumCodes(pb.Member.Role.items(), "ROLE_")
# Roles sort by the enum's number (manager, contributor, observer), not by how their codes spell.
ROLE_ORDER = case(ROLES.codes, value=Member.role)
COUNT_CHANGE = {"create": 1, "undelete": 1, "delete": -1}


class MemberType(ChildType[Member, pb.Member]):
    model = Member
    message = pb.Member
    field = "member"
    user_fields = ("user",)
    path = ResourcePath("organizations/{organization}/projects/{project}/members/{member}")
    updatable = frozenset({"user", "role"})
    unique = {"uq_members_project_id_user": "member.user"}
    fast_create = False  # before_write counts the member on the project row
    list_spec = ListSpec(
        filter_fields={
            "user": Field(Member.user),
            "role": ROLES.filter_field(Member.role),
            "create_time": Field(Member.created_at, parse_time),
        },
        order_fields={
            "role": Field(ROLE_ORDER, parse_int),
            "create_time": Field(Member.created_at, parse_time),
        },
        default_order="create_time desc",
        id_column=Member.id,
    )

    def to_message(self, row: Member) -> pb.Member:
        return pb.Member(
            name=self.path.format(row.organization_id, row.project_id, row.id),
            user=row.user,
            role=ROLES.value(row.role),
            **base_fields(row),
        )

    def apply(self, row: Member, message: pb.Member, paths: list[str], violations: Violations) -> None:
        v = violations
        for path in paths:
            field = f"member.{path}"
            if path == "user":
                user = validate.reference(v, field, message.user, common.USER, row.organization_id)
                if not user:
                    v.add(field, "is required")
                elif row.user and user != row.user:
                    v.add(field, "cannot change; remove the member and add the other user")
                row.user = user
            elif path == "role":
                row.role = ROLES.check(v, field, message.role or pb.Member.ROLE_CONTRIBUTOR)

    async def before_write(self, session: AsyncSession, row: Member, action: str) -> None:
        """Keep the project's member_count: a row lock on the project orders concurrent changes. The
        project's etag and update_time stay: a derived figure is not an edit of the project. A member
        comes back only while identity still has the user active, as a new one is added."""
        if action == "undelete":
            violations = Violations()
            require("identity.users.get", "a member comes back only as an active user, so undeleting one")
            await directory.current().check_user(violations, "member.user", row.user)
            if violations.items:
                raise FailedPrecondition(
                    f"{row.user} is no longer an active user of this organization; it cannot rejoin the project",
                    "USER_INACTIVE",
                )
        if change := COUNT_CHANGE.get(action):
            with session.no_autoflush:  # the member's own row is flushed after, where a duplicate is ALREADY_EXISTS
                await session.execute(
                    update(Project)
                    .where(Project.id == row.project_id)
                    .values(member_count=Project.member_count + change, updated_at=Project.updated_at)
                    .execution_options(synchronize_session=False)
                )
