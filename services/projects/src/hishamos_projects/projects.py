"""Projects: how a Project row maps to its message and which values it accepts."""

from __future__ import annotations

from hishamos.projects.v1 import project_pb2 as pb
from hishamos_kit import validate
from hishamos_kit.errors import Violations
from hishamos_kit.listing import Field, ListSpec, parse_bool, parse_time
from hishamos_kit.resources import ResourcePath
from hishamos_kit.standard import ResourceType, base_fields
from hishamos_projects.models import Project

USER = ResourcePath("organizations/{organization}/users/{user}")


class ProjectType(ResourceType[Project, pb.Project]):
    model = Project
    message = pb.Project
    field = "project"
    path = ResourcePath("organizations/{organization}/projects/{project}")
    updatable = frozenset({"display_name", "slug", "description", "manager", "is_active"})
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
            elif path == "is_active" and message.HasField("is_active"):
                row.is_active = message.is_active
