"""`python -m hishamos_devstack up`, what `make up` runs, as a real process on a data directory of its own: how
it stops (signals, a service's death, a stop during start-up), leaving no process behind, and what it says
when it cannot start (a stack still running there, a database another checkout migrated)."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import weakref
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from hishamos_devstack import signals
from hishamos_devstack.__main__ import up, watch
from hishamos_devstack.stack import SERVICES, Ports, Stack

BANNER = "HishamOS is up"


class Up:
    """A running `up`, its output (stdout and stderr) read as it comes."""

    def __init__(self, data_dir: Path, *prefix: str, command: str = "up") -> None:
        self.data_dir = data_dir
        # As from a terminal, whatever the tests run under (`nohup make test` ignores SIGHUP, and children inherit
        # that): a handler, as up's own for a signal it ignores, is reset to the default in a child. No preexec_fn,
        # which forks without exec support and trips gRPC's fork handlers in the child.
        hangup = signal.signal(signal.SIGHUP, signals._ignore)
        arguments = [command, "--free-ports", "--data-dir", str(data_dir)]
        try:
            self.process = subprocess.Popen(
                [*prefix, sys.executable, "-m", "hishamos_devstack", *arguments],
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},  # its progress lines as they are printed
            )
        finally:
            signal.signal(signal.SIGHUP, hangup)
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line)

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def wait_for(self, text: str, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.output:
            assert self.process.poll() is None, f"up exited ({self.process.returncode}) before {text!r}:\n{self.output}"
            assert time.monotonic() < deadline, f"no {text!r} after {timeout:.0f}s:\n{self.output}"
            time.sleep(0.02)

    def stop(self, signum: int) -> int:
        self.process.send_signal(signum)
        return self.finish()

    def finish(self, timeout: float = 60.0) -> int:
        try:
            returncode = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"up still running after {timeout:.0f}s:\n{self.output}") from None
        self._reader.join(5)
        return returncode


def stack_processes(data_dir: Path) -> dict[int, str]:
    """Processes of a stack on `data_dir`, by PID: `up` and PostgreSQL name it on their command lines, Envoy
    its configuration there, and the services' environment the outbox there."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline, environ = (entry / "cmdline").read_bytes(), (entry / "environ").read_bytes()
        except OSError:
            continue  # gone meanwhile
        if str(data_dir).encode() in cmdline + environ:
            found[int(entry.name)] = cmdline.replace(b"\0", b" ").decode(errors="replace")
    return found


@pytest.fixture
def data_dir() -> Iterator[Path]:
    """Not under pytest's base temporary directory, which every pytest session that starts makes private to
    its owner again: run as root, the stack's PostgreSQL runs as another user and would lose its files."""
    path = Path(tempfile.mkdtemp(prefix="hishamos-devstack-"))
    yield path
    for pid in stack_processes(path):  # what a failed test left running
        os.kill(pid, signal.SIGKILL)
    shutil.rmtree(path, ignore_errors=True)


def assert_whole(data_dir: Path) -> None:
    """The stack's seven processes are found, so that finding none later means they are gone."""
    commands = " ".join(stack_processes(data_dir).values())
    for name in ("hishamos_devstack up", "postgres -D", "envoy -c", *(f"hishamos_{s}" for s in SERVICES)):
        assert name in commands, f"{name} not running: {commands}"


def test_sighup_stops_the_stack_and_a_second_up_names_the_one_still_running(data_dir: Path) -> None:
    first = Up(data_dir)
    first.wait_for(BANNER)
    assert_whole(data_dir)
    postmaster = int((data_dir / "postgres" / "postmaster.pid").read_text().split()[0])

    second = Up(data_dir)
    assert second.finish() == 1, second.output
    assert f"A previous stack is still running on {data_dir}: its PostgreSQL (PID {postmaster})" in second.output
    assert f"kill -INT {postmaster}" in second.output
    assert "did not start" not in second.output and "Traceback" not in second.output
    assert first.process.poll() is None, "the second up stopped the first"

    # A closed terminal stops the stack as Ctrl-C does, leaving nothing running.
    assert first.stop(signal.SIGHUP) == 0, first.output
    assert "SIGHUP: stopping…" in first.output
    assert stack_processes(data_dir) == {}


def test_a_stop_during_start_up_stops_at_once_and_the_next_up_starts_under_nohup(data_dir: Path) -> None:
    # `make migrate` on a fresh directory stops its PostgreSQL on SIGTERM too (it was left running).
    migrating = Up(data_dir, command="migrate")
    migrating.wait_for("    migrating identity")
    assert migrating.stop(signal.SIGTERM) == 128 + signal.SIGTERM, migrating.output
    assert "SIGTERM while migrating: stopped." in migrating.output and "Traceback" not in migrating.output
    assert stack_processes(data_dir) == {}

    for step, signum in (("    migrating agents", signal.SIGTERM), ("==> starting identity", signal.SIGINT)):
        up = Up(data_dir)
        up.wait_for(step)
        started = time.monotonic()
        assert up.stop(signum) == 128 + signum, up.output
        assert time.monotonic() - started < 20
        assert f"{signal.Signals(signum).name} during start-up: stopped." in up.output
        assert BANNER not in up.output and "Traceback" not in up.output
        assert stack_processes(data_dir) == {}

    # Under nohup a closed terminal does not stop it; SIGTERM still does.
    up = Up(data_dir, "nohup")
    up.wait_for(BANNER)
    up.process.send_signal(signal.SIGHUP)
    time.sleep(2)
    assert up.process.poll() is None, up.output
    assert up.stop(signal.SIGTERM) == 0, up.output
    assert stack_processes(data_dir) == {}


def set_revision(up: Up, service: str, revision: str) -> None:
    """Stamp a service's database with a revision, as a checkout with more migrations would have left it."""
    port = re.search(r"PostgreSQL 127\.0\.0\.1:(\d+)", up.output)
    assert port is not None
    password = json.loads((up.data_dir / "secrets.json").read_text())[f"{service}_owner"]
    database, owner = f"hishamos_{service}", f"hishamos_{service}_owner"
    dsn = f"host=127.0.0.1 port={port[1]} dbname={database} user={owner} password={password}"
    with psycopg.connect(dsn, autocommit=True) as conn:
        table = sql.Identifier(f"alembic_version_{service}")
        conn.execute(sql.SQL("update {} set version_num = %s").format(table), (revision,))


def test_a_service_that_dies_fails_up_and_a_database_from_another_checkout_is_named(data_dir: Path) -> None:
    up = Up(data_dir)
    up.wait_for(BANNER)
    assert_whole(data_dir)
    set_revision(up, "agents", "0999")
    projects = next(pid for pid, command in stack_processes(data_dir).items() if "hishamos_projects" in command)
    os.kill(projects, signal.SIGKILL)
    assert up.finish() == 1, up.output
    assert f"projects exited (code {-signal.SIGKILL}); last lines:" in up.output
    assert stack_processes(data_dir) == {}

    # The next start stops at the database this checkout cannot migrate, and says what to do.
    up = Up(data_dir)
    assert up.finish() == 1
    said = " ".join(up.output.split())
    assert "Cannot migrate agents: its database is at revision 0999, which this checkout's migrations do not" in said
    assert f"Use the checkout that migrated it, or, to start over, remove {data_dir} (all its data" in said
    assert "Traceback" not in up.output and BANNER not in up.output
    assert stack_processes(data_dir) == {}


def test_a_failed_start_shows_this_runs_lines_of_a_log_not_an_earlier_runs(data_dir: Path) -> None:
    stack = Stack(data_dir)
    stack.log_dir.mkdir(parents=True)
    (stack.log_dir / "echo.log").write_text("an error of yesterday\n")
    stack._spawn("echo", ["sh", "-c", "echo today"], dict(os.environ))
    stack.processes["echo"].wait(10)
    assert stack.log_tail("echo") == "today"


def test_up_names_free_ports_when_postgres_port_is_taken(tmp_path: Path) -> None:
    """A usual port taken (here PostgreSQL's): `make up` says how to start on free ones."""
    holder = socket.socket()
    holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    ports = Ports.free()
    ports.postgres = holder.getsockname()[1]
    stack = Stack(tmp_path / "taken", ports, progress=lambda _: None)
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    try:
        with pytest.raises(SystemExit) as failed:
            up(stack, False)
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)
        holder.close()
    message = str(failed.value.code)
    assert "UP_ARGS=--free-ports" in message, message


@contextlib.contextmanager
def dropped_stop_signal(signum: int) -> Iterator[None]:
    """A stop signal that lands while Python runs a weakref callback (an import's module lock has one): the
    handler raises there, and Python drops the exception."""
    saved = {sig: signal.getsignal(sig) for sig in signals.STOP_SIGNALS}
    signals.raise_on_stop()
    try:
        thing = threading.Event()  # any object a weak reference can point at
        ref = weakref.ref(thing, lambda _: signal.raise_signal(signum))
        with contextlib.suppress(signals.Stopped):
            del thing  # the handler runs in the callback, and its Stopped is dropped there
        assert ref() is None
        yield
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)
        signals._received.clear()


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")  # the dropped exception, as expected
def test_a_stop_signal_whose_exception_python_dropped_still_stops_start_up() -> None:
    """Start-up asks at each step whether a stop came (`make migrate` ran to the end after a SIGTERM so dropped)."""
    with dropped_stop_signal(signal.SIGTERM), pytest.raises(signals.Stopped):
        signals.check()


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_a_running_stack_stops_on_a_stop_signal_whose_exception_python_dropped(tmp_path: Path) -> None:
    """The running stack asks too, once a second."""
    stops: list[str] = []

    def watching() -> None:
        try:
            watch(Stack(tmp_path, Ports.free(), progress=lambda _: None))
        except signals.Stopped as stop:
            stops.append(str(stop))

    with dropped_stop_signal(signal.SIGHUP):
        thread = threading.Thread(target=watching, daemon=True)  # left behind if it never stops
        thread.start()
        thread.join(10)
    assert stops == ["SIGHUP"], "the stack kept running"
