"""Projects: how a Project row maps to its message and which values it accepts."""

from __future__ import annotations

from typing import Any

from google.protobuf import struct_pb2
from sqlalchemy import func, inspect, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from hishamos.projects.v1 import project_pb2 as pb
from hishamos_kit import resources, validate
from hishamos_kit.auth import Principal, require
from hishamos_kit.errors import FailedPrecondition, NotFound, ResourceExhausted, Violations
from hishamos_kit.listing import Field, ListSpec, parse_bool, parse_time
from hishamos_kit.resources import ResourcePath
from hishamos_kit.standard import ResourceType, StandardMethods, base_fields
from hishamos_projects import directory, schemas
from hishamos_projects.common import USER
from hishamos_projects.models import Epic, Project, Sprint, Story


class ProjectType(ResourceType[Project, pb.Project]):
    async def before_write(self, session: AsyncSession, row: Project, action: str) -> None:
        """A new manager is a user identity knows; the organization's max_projects holds.

        Only a manager being set is checked: one who has since been deactivated must not block
        every other edit of the project."""
        if action in ("create", "update") and row.manager and inspect(row).attrs.manager.history.has_changes():
            violations = Violations()
            require("identity.users.get", "naming a manager checks the user, so setting project.manager")
            await directory.current().check_user(violations, "project.manager", row.manager)
            violations.raise_if_any()
        if action in ("create", "undelete"):
            limit = await directory.current().max_projects(row.organization_id)  # asked before locking
            # One writer at a time per organization, so two creates cannot both take the last place.
            await session.execute(
                text("select pg_advisory_xact_lock(hashtext('projects:' || :org))"), {"org": str(row.organization_id)}
            )
            live = await session.scalar(
                select(func.count()).select_from(Project).where(Project.is_deleted.is_(False), Project.id != row.id)
            )
            if (live or 0) >= limit:
                raise ResourceExhausted(
                    f"the organization has {live} projects and may have {limit}; delete one, or ask a platform "
                    "operator to raise max_projects",
                    "QUOTA_EXCEEDED",
                    {"quota": "max_projects", "limit": str(limit)},
                )

    model = Project
    message = pb.Project
    field = "project"
    path = ResourcePath("organizations/{organization}/projects/{project}")
    # is_active is output only: it changes through ArchiveProject/UnarchiveProject, which need their
    # own permission and lock the project row so that the switch orders against writes to its work.
    updatable = frozenset({"display_name", "slug", "description", "manager", "story_custom_fields_schema"})
    unique = {"uq_projects_organization_id_slug": "project.slug"}
    list_spec = ListSpec(
        filter_fields={
            "slug": Field(Project.slug),
            "display_name": Field(Project.display_name, text=True),
            "manager": Field(Project.manager),
            "is_active": Field(Project.is_active, parse_bool),
            "create_time": Field(Project.created_at, parse_time),
            "update_time": Field(Project.updated_at, parse_time),
        },
        order_fields={
            "display_name": Field(Project.display_name),
            "slug": Field(Project.slug),
            "create_time": Field(Project.created_at, parse_time),
            "update_time": Field(Project.updated_at, parse_time),
        },
        default_order="create_time desc",
        id_column=Project.id,
    )

    def to_message(self, row: Project) -> pb.Project:
        return pb.Project(
            name=self.path.format(row.organization_id, row.id),
            display_name=row.display_name,
            slug=row.slug,
            description=row.description,
            manager=row.manager,
            is_active=row.is_active,
            member_count=row.member_count,
            story_custom_fields_schema=struct(row.story_custom_fields_schema)
            if row.story_custom_fields_schema
            else None,
            **base_fields(row),
        )

    def apply(self, row: Project, message: pb.Project, paths: list[str], violations: Violations) -> None:
        v = violations
        for path in paths:
            field = f"project.{path}"
            if path == "display_name":
                row.display_name = validate.text(v, field, message.display_name, required=True)
            elif path == "slug":
                row.slug = validate.slug(v, field, message.slug)
            elif path == "description":
                row.description = validate.text(v, field, message.description, max_length=10_000)
            elif path == "manager":
                row.manager = validate.reference(v, field, message.manager, USER, row.organization_id)
            elif path == "story_custom_fields_schema":
                row.story_custom_fields_schema = schemas.check_schema(v, field, message.story_custom_fields_schema)


def struct(value: dict[str, Any]) -> struct_pb2.Struct | None:
    """A JSON object as a Struct; empty is unset."""
    if not value:
        return None
    message = struct_pb2.Struct()
    message.update(value)
    return message


class ProjectMethods(StandardMethods[Project, pb.Project]):
    async def delete_project(self, principal: Principal, name: str, etag: str, *, force: bool) -> pb.Project:
        """Soft delete; without `force`, only a project with no live sprints, epics or stories.

        The project row is locked FOR UPDATE: a child create (which locks it FOR SHARE) cannot slip in
        between the count and the delete.
        """
        project_id = resources.own_name(principal, self.kind.path, name)
        async with self.db.tenant(principal.organization_id) as session:
            row = await session.get(Project, project_id, with_for_update=True)
            if row is None:
                raise NotFound(name)
            resources.soft_delete(row, name)  # a deleted one is NOT_FOUND, whatever the etag
            resources.check_etag(row, etag, name)
            if not force:
                live = {
                    model.__tablename__: await session.scalar(
                        select(func.count()).where(model.project_id == project_id, model.is_deleted.is_(False))
                    )
                    or 0
                    for model in (Sprint, Epic, Story)
                }
                if any(live.values()):
                    raise FailedPrecondition(
                        f"{name} still has live sprints, epics or stories; delete it with force=true",
                        "PROJECT_NOT_EMPTY",
                        {table: str(count) for table, count in live.items()},
                    )
            await self._flush(session, name)
            return self.kind.to_message(row)

    async def set_active(self, principal: Principal, name: str, etag: str, *, active: bool) -> pb.Project:
        """Archive (active=False) or unarchive a live project; the state it is in already changes nothing.

        The project row is locked FOR UPDATE, so the switch waits for the writes under way in its work
        (they hold it FOR KEY SHARE), and every later one sees the new state.
        """
        project_id = resources.own_name(principal, self.kind.path, name)
        async with self.db.tenant(principal.organization_id) as session:
            row = await session.get(Project, project_id, with_for_update=True)
            if row is None or row.is_deleted:
                raise NotFound(name)
            resources.check_etag(row, etag, name)
            row.is_active = active
            await self._flush(session, name)
            return self.kind.to_message(row)
