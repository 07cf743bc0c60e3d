"""`make bench`: each figure beside its ceiling, measured in one run on this machine.

Targets are ratios, not absolute times, so they hold on any machine: a figure is compared with
the same load against its ceiling (a bare grpc.aio echo server; direct calls for Envoy).

The echo answers with a GetProject-sized reply (~300 B). A page of 50 stories is some 30 times
that, and moving those bytes costs the client, the kernel and Envoy as much as a service's work,
so `list_stories_vs_same_bytes_echo_qps` also compares ListStories with an echo that gets the
same request bytes and answers with a reply of the same size: the ceiling gets the same bytes.
`list_stories_vs_echo_qps` stays as the issue defines it.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import grpc
import psycopg

from bench import argon2_rate, login_floor
from bench.echo import METHOD as ECHO
from bench.load import CONCURRENCY, Figure, measure
from hishamos.identity.v1 import auth_pb2, auth_pb2_grpc, user_pb2, user_pb2_grpc
from hishamos.projects.v1 import project_pb2, project_pb2_grpc, story_pb2, story_pb2_grpc
from hishamos_devstack.stack import Ports, Stack, free_port
from tests.conftest import Tenant, sign_up

RESULTS = Path(__file__).parent / "results" / "latest.json"
TARGETS = {
    "get_project_vs_echo_qps": 0.40,
    "envoy_vs_direct_qps": 0.85,
    "list_stories_vs_echo_qps": 0.30,
    "list_stories_vs_same_bytes_echo_qps": 0.30,
    "create_story_vs_echo_qps": 0.25,
    "authed_vs_unauthed_qps": 0.90,
    "login_vs_argon2_rate": 0.90,
}  # a ratio without a target explains another (see `bench.login_floor`)
LOGIN = "/hishamos.identity.v1.AuthService/Login"
GET_PROJECT = "/hishamos.projects.v1.ProjectService/GetProject"
LIST_STORIES = "/hishamos.projects.v1.StoryService/ListStories"
CREATE_STORY = "/hishamos.projects.v1.StoryService/CreateStory"
PAIRS = {  # ratio: (figure, its ceiling)
    "get_project_vs_echo_qps": ("get_project_direct", "echo"),
    "envoy_vs_direct_qps": ("get_project_envoy", "get_project_direct"),
    "list_stories_vs_echo_qps": ("list_stories_envoy", "echo"),
    "list_stories_vs_same_bytes_echo_qps": ("list_stories_envoy", "echo_list_sized"),
    "create_story_vs_echo_qps": ("create_story_envoy", "echo"),
    "authed_vs_unauthed_qps": ("get_project_direct", "get_project_unauthed"),
    "login_vs_argon2_rate": ("login", "argon2id_verify"),
    "login_floor_vs_argon2_rate": ("login_floor", "argon2id_verify"),
}
BACKLOG = 10_000  # stories in the project that ListStories pages through
WRITES = {"create_story_envoy"}  # figures after which the database has work left to do
ROUNDS = 12  # even: as many rounds in each order (see `rounds`)
SECONDS = 3.0


def start(module: str, *args: str, env: dict[str, str] | None = None) -> tuple[subprocess.Popen[bytes], str]:
    """A ceiling server in a process of its own, like the services it is compared with."""
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", module, str(port), *args], env=env)
    target = f"127.0.0.1:{port}"
    grpc.channel_ready_future(grpc.insecure_channel(target)).result(timeout=30)
    return process, target


def seed_stories(channel: grpc.Channel, metadata: tuple[tuple[str, str], ...], project: str, count: int) -> None:
    """`count` stories in `project`, 500 per BatchCreateStories call."""
    stories = story_pb2_grpc.StoryServiceStub(channel)
    for start in range(0, count, 500):
        requests = [
            story_pb2.CreateStoryRequest(story=story_pb2.Story(title=f"Story {i}", story_points=i % 8, labels=["seed"]))
            for i in range(start, min(start + 500, count))
        ]
        batch = story_pb2.BatchCreateStoriesRequest(parent=project, requests=requests)
        stories.BatchCreateStories(batch, metadata=metadata, timeout=120)


def sign_in_users(identity: str, tenant: Tenant) -> list[str]:
    """A user per concurrent caller, all with the tenant's password: many people sign in at once."""
    with grpc.insecure_channel(identity) as channel:
        users = user_pb2_grpc.UserServiceStub(channel)
        names = [f"bench-{i}" for i in range(CONCURRENCY)]
        for name in names:
            user = user_pb2.User(email=f"{name}@{tenant.slug}.test", username=name)
            request = user_pb2.CreateUserRequest(parent=tenant.organization, user=user, password=tenant.password)
            users.CreateUser(request, metadata=tenant.metadata, timeout=30)
    return names


def analyze(stack: Stack) -> None:
    """Refresh the planner's statistics, as autovacuum does within a minute of a bulk load: measured
    straight after the seeding, PostgreSQL still believes the project empty and sorts all its stories."""
    _, owner_url, _ = stack.database_urls("projects")
    with psycopg.connect(owner_url.replace("postgresql+psycopg", "postgresql"), autocommit=True) as conn:
        conn.execute("ANALYZE")


def rounds(runs: dict[str, Callable[[], Figure]]) -> list[dict[str, Figure]]:
    """Every figure once per round, back to back: a ratio taken within a round compares
    measurements made under the same conditions, whatever the machine's neighbours do. Every other
    round runs in reverse order, so what a figure leaves behind (the flushing and vacuuming after
    CreateStory's inserts, say) falls on the figure after it in one round and on the one before it in
    the next; the median of an even number of rounds then weighs both orders alike."""
    order = list(runs.items())
    return [{name: run() for name, run in (order if i % 2 == 0 else order[::-1])} for i in range(ROUNDS)]


def main(selected: list[str]) -> None:
    """Measure the ratios named in `selected` (all when empty) and what they are computed from."""
    unknown = set(selected) - set(PAIRS)
    if unknown:
        raise SystemExit(f"unknown ratio {', '.join(sorted(unknown))}; choose from {', '.join(PAIRS)}")
    pairs = {name: PAIRS[name] for name in selected or PAIRS}
    needed = {figure for pair in pairs.values() for figure in pair}
    with tempfile.TemporaryDirectory() as data, Stack(Path(data), Ports.free(), progress=print) as stack:
        identity = f"127.0.0.1:{stack.ports.services['identity']}"
        tenant = sign_up(grpc.insecure_channel(identity))
        direct = f"127.0.0.1:{stack.ports.services['projects']}"
        envoy = f"127.0.0.1:{stack.ports.envoy}"
        with grpc.insecure_channel(direct) as channel:
            project = (
                project_pb2_grpc.ProjectServiceStub(channel)
                .CreateProject(
                    project_pb2.CreateProjectRequest(
                        parent=tenant.organization,
                        project=project_pb2.Project(display_name="Bench", slug="bench", description="d" * 200),
                    ),
                    metadata=tenant.metadata,
                )
                .project
            )
            list_request = story_pb2.ListStoriesRequest(parent=project.name, page_size=50, order_by="rank")
            list_reply_size = 0
            if "list_stories_envoy" in needed:
                seed_stories(channel, tenant.metadata, project.name, BACKLOG)
                analyze(stack)
                stories = story_pb2_grpc.StoryServiceStub(channel)
                list_reply_size = stories.ListStories(list_request, metadata=tenant.metadata).ByteSize()
        request = project_pb2.GetProjectRequest(name=project.name).SerializeToString()
        list_request_bytes = list_request.SerializeToString()
        create_request = story_pb2.CreateStoryRequest(
            parent=project.name,
            story=story_pb2.Story(title="Bench story", description="d" * 200, story_points=3, labels=["bench"]),
        ).SerializeToString()
        logins = [
            auth_pb2.LoginRequest(
                organization_slug=tenant.slug, login=user, password=tenant.password
            ).SerializeToString()
            for user in (sign_in_users(identity, tenant) if needed & {"login", "login_floor"} else [])
        ]
        reply_size = project_pb2.GetProjectResponse(project=project).ByteSize()
        login_reply_size = 0
        if "login_floor" in needed:
            with grpc.insecure_channel(identity) as channel:
                one = auth_pb2.LoginRequest.FromString(logins[0])
                login_reply_size = auth_pb2_grpc.AuthServiceStub(channel).Login(one, timeout=30).ByteSize()
        organization_id = tenant.organization.split("/")[1]
        ceilings = [
            start("bench.echo", str(reply_size)),
            start("bench.unauthed", organization_id, env=stack.service_env("projects")),
            start("bench.echo", str(list_reply_size)),
            start("bench.login_floor", str(login_reply_size)),
        ]
        (_, echo), (_, unauthed), (_, echo_list_sized), (_, floor) = ceilings
        try:
            print(f"==> measuring: {CONCURRENCY} concurrent callers, {ROUNDS} rounds of {SECONDS:.0f} s per figure")
            print(f"    replies: GetProject {reply_size} B, a ListStories page {list_reply_size} B")
            # The ceiling gets the same bytes and metadata, so the client does the same work for each.
            runs: dict[str, Callable[[], Figure]] = {
                "echo": lambda: measure(echo, ECHO, request, tenant.metadata, seconds=SECONDS),
                "get_project_direct": lambda: measure(direct, GET_PROJECT, request, tenant.metadata, seconds=SECONDS),
                "get_project_envoy": lambda: measure(envoy, GET_PROJECT, request, tenant.metadata, seconds=SECONDS),
                "list_stories_envoy": lambda: measure(
                    envoy, LIST_STORIES, list_request_bytes, tenant.metadata, seconds=SECONDS
                ),
                "echo_list_sized": lambda: measure(
                    echo_list_sized, ECHO, list_request_bytes, tenant.metadata, seconds=SECONDS
                ),
                "create_story_envoy": lambda: measure(
                    envoy, CREATE_STORY, create_request, tenant.metadata, seconds=SECONDS
                ),
                "get_project_unauthed": lambda: measure(
                    unauthed, GET_PROJECT, request, tenant.metadata, seconds=SECONDS
                ),
                "login": lambda: measure(identity, LOGIN, logins, seconds=SECONDS),
                "login_floor": lambda: measure(floor, login_floor.METHOD, logins, seconds=SECONDS),
                "argon2id_verify": lambda: argon2_rate.measure(SECONDS),
            }
            by_round: dict[str, list[float]] = {}
            figures: dict[str, Figure] = {}
            # Pairs whose figure writes heavily run after all the others, in rounds of their own: the
            # database's flushing and vacuuming after their inserts then falls on no other figure.
            writing = {name: pair for name, pair in pairs.items() if pair[0] in WRITES}
            for phase in ({name: pair for name, pair in pairs.items() if name not in writing}, writing):
                figured = {figure for pair in phase.values() for figure in pair}
                measured = rounds({name: run for name, run in runs.items() if name in figured})
                by_round |= {name: sorted(r[a].qps / r[b].qps for r in measured) for name, (a, b) in phase.items()}
                for name in figured - figures.keys():
                    figures[name] = sorted((r[name] for r in measured), key=lambda f: f.qps)[ROUNDS // 2]
        finally:
            for process, _ in ceilings:
                process.terminate()
                process.wait()
    report({name: figures[name] for name in runs if name in figures}, by_round)


def report(figures: dict[str, Figure], by_round: dict[str, list[float]]) -> None:
    """Each ratio is the median of its rounds; the lowest and highest round show how much the machine moved."""
    ratios = {name: statistics.median(values) for name, values in by_round.items()}
    print(f"\n{'figure':<28}{'qps':>10}{'p50 ms':>10}{'p99 ms':>10}{'errors':>8}")
    for name, f in figures.items():
        print(f"{name:<28}{f.qps:>10.0f}{f.p50_ms:>10.2f}{f.p99_ms:>10.2f}{f.errors:>8}")
    width = max(28, *(len(name) + 2 for name in ratios))
    print(f"\n{'ratio (median of rounds)':<{width}}{'value':>10}{'rounds':>13}{'target':>10}  met")
    for name, value in ratios.items():
        spread, target = f"{by_round[name][0]:.2f}-{by_round[name][-1]:.2f}", TARGETS.get(name)
        met = "" if target is None else "yes" if value >= target else "NO"
        print(f"{name:<{width}}{value:>10.2f}{spread:>13}{'' if target is None else f'{target:.2f}':>10}  {met}")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(
        json.dumps(
            {
                "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "machine": {"cpus": os.cpu_count()},
                "figures": {name: f.as_dict() for name, f in figures.items()},
                "ratios": {
                    name: {
                        "value": round(v, 3),
                        "rounds": [round(x, 3) for x in by_round[name]],
                        "target": TARGETS.get(name),
                        "met": None if name not in TARGETS else v >= TARGETS[name],
                    }
                    for name, v in ratios.items()
                },
            },
            indent=2,
        )
    )
    print(f"\nwrote {RESULTS}")


if __name__ == "__main__":
    main(sys.argv[1:])
