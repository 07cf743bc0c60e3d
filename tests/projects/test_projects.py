from __future__ import annotations

from hishamos.projects.v1 import project_pb2, project_pb2_grpc
from tests.standard import Case, StandardMethodsContract

PROJECTS = Case(
    service="projects",
    pb=project_pb2,
    stub=project_pb2_grpc.ProjectServiceStub,
    kind="Project",
    field="project",
    plural="projects",
    valid=lambda i: project_pb2.Project(display_name=f"Apollo {i}", slug=f"apollo-{i}", description="to the moon"),
    invalid=lambda: project_pb2.Project(
        display_name="", slug="Not A Slug", manager="users/1", description="x" * 10_001
    ),
    invalid_fields={"project.display_name", "project.slug", "project.manager", "project.description"},
    update=("display_name", "Artemis"),
    unique_field="slug",
    filter_true=lambda p: f'slug = "{p.slug}"',
)


class TestProjectStandardMethods(StandardMethodsContract):
    case = PROJECTS
