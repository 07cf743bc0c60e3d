"""The whole platform on one machine: embedded PostgreSQL, migrations, the four services and Envoy."""

from __future__ import annotations

import base64
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from alembic import command
from alembic.config import Config
from grpc_health.v1 import health_pb2, health_pb2_grpc

from hishamos_devstack import envoy, signals
from hishamos_devstack.postgres import EmbeddedPostgres
from hishamos_devstack.provision import ServiceDatabase, provision
from hishamos_kit.migrations import UnknownRevision
from hishamos_kit.settings import DEFAULT_METRICS_PORTS, DEFAULT_PORTS

ROOT = Path(__file__).resolve().parents[4]
SERVICES = envoy.SERVICES
EXTENSIONS = {"knowledge": ("vector",)}
Progress = Callable[[str], None]


_handed: set[int] = set()


def free_port() -> int:
    """A port free now, below the kernel's ephemeral range. One the kernel picks (bind to port 0) comes
    from that range, and can be given again, as the source port of a connection some process opens,
    before the service that was meant to listen on it binds it: a start-up then fails now and then."""
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    below = range(10000 if low > 11000 else 1024, low)
    for _ in range(200 if len(below) > 1000 else 0):  # a range tuned down to (almost) nothing: the kernel's pick
        port = secrets.choice(below)
        if port in _handed:
            continue
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        _handed.add(port)
        return port
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Ports:
    envoy: int = 8080
    envoy_admin: int = 9901
    postgres: int = 54329
    services: dict[str, int] = field(default_factory=lambda: dict(DEFAULT_PORTS))
    metrics: dict[str, int] = field(default_factory=lambda: dict(DEFAULT_METRICS_PORTS))

    @classmethod
    def free(cls) -> Ports:
        return cls(
            envoy=free_port(),
            envoy_admin=free_port(),
            postgres=free_port(),
            services={s: free_port() for s in SERVICES},
            metrics={s: free_port() for s in SERVICES},
        )


def load_secrets(path: Path) -> dict[str, str]:
    """Random secrets for the local stack, made once and kept beside its data (new ones added as needed)."""
    values: dict[str, str] = json.loads(path.read_text()) if path.exists() else {}
    names = ["postgres", "operator", *(f"{s}_{kind}" for s in SERVICES for kind in ("owner", "app", "service"))]
    keys = ["identity_key_encryption_key", "agents_credentials_key", *(f"{s}_page_token_key" for s in SERVICES)]
    missing = {name: secrets.token_urlsafe(24) for name in names if name not in values}
    missing |= {name: base64.b64encode(secrets.token_bytes(32)).decode() for name in keys if name not in values}
    if missing:
        values.update(missing)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(values, indent=2))
        path.chmod(0o600)
    return values


def migrate(service: str, owner_url: str, app_role: str, revision: str = "head", downgrade: bool = False) -> None:
    cfg = Config(str(ROOT / "services" / service / "alembic.ini"))
    cfg.set_main_option("sqlalchemy.url", owner_url.replace("%", "%%"))
    cfg.set_main_option("app_role", app_role)
    (command.downgrade if downgrade else command.upgrade)(cfg, revision)


class Stack:
    """Start with `start()`, stop with `stop()` (or use as a context manager)."""

    def __init__(self, data_dir: Path, ports: Ports | None = None, progress: Progress = print) -> None:
        self.data_dir = data_dir
        self.ports = ports or Ports()
        self.progress = progress
        self.log_dir = data_dir / "logs"
        self.outbox = data_dir / "outbox"  # mail, as .eml files, unless an SMTP server is configured
        self.secrets = load_secrets(data_dir / "secrets.json")
        self.postgres = EmbeddedPostgres(data_dir / "postgres", self.ports.postgres, self.secrets["postgres"])
        self.databases = {
            s: ServiceDatabase(
                s,
                "127.0.0.1",
                self.ports.postgres,
                self.secrets[f"{s}_owner"],
                self.secrets[f"{s}_app"],
                self.postgres.socket_dir_for_clients,
            )
            for s in SERVICES
        }
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self._log_starts: dict[str, int] = {}  # where each process's lines of this run begin in its log
        self._postgres_started = False

    # -- databases ---------------------------------------------------------------------------
    def external_urls(self, service: str) -> tuple[str, str] | None:
        """(app URL, owner URL) when the environment points the service at another PostgreSQL."""
        prefix = f"HISHAMOS_{service.upper()}_"
        app, owner = os.environ.get(prefix + "DATABASE_URL"), os.environ.get(prefix + "MIGRATION_DATABASE_URL")
        return (app, owner) if app and owner else None

    def database_urls(self, service: str) -> tuple[str, str, str]:
        """(app URL, owner URL, app role) of a service."""
        external = self.external_urls(service)
        if external:
            return external[0], external[1], os.environ.get(f"HISHAMOS_{service.upper()}_APP_ROLE", "")
        db = self.databases[service]
        return db.app_url, db.owner_url, db.app

    def start_postgres(self) -> None:
        if all(self.external_urls(s) for s in SERVICES):
            return
        if (pid := self.postgres.running_pid()) is not None:
            raise SystemExit(self._still_running(pid))
        with signals.deferred():
            if self.postgres.init():
                self.progress(f"    initialised PostgreSQL 18 in {self.postgres.data_dir}")
            self.postgres.start()
            self._postgres_started = True
        admin = self.postgres.admin_url.replace("postgresql+psycopg", "postgresql")
        for service in SERVICES:
            if not self.external_urls(service):
                provision(admin, self.databases[service], EXTENSIONS.get(service, ()))

    def _still_running(self, pid: int) -> str:
        """Why PostgreSQL cannot start here: pg_ctl's own words (a lock file exists) come buried in its log."""
        return (
            f"A previous stack is still running on {self.data_dir}: its PostgreSQL (PID {pid}) holds "
            f"{self.postgres.data_dir}.\nStop that `make up` (Ctrl-C where it runs). If it is gone and left its "
            f"processes behind, stop PostgreSQL with `kill -INT {pid}`,\nthen its services and Envoy if still "
            "running (`ps -ef | grep -e hishamos_ -e envoy` lists them) with `kill <pid>`."
        )

    def migrate_all(self) -> None:
        for service in SERVICES:
            signals.check()
            _, owner_url, app_role = self.database_urls(service)
            self.progress(f"    migrating {service}")
            try:
                migrate(service, owner_url, app_role)
            except UnknownRevision as exc:
                raise SystemExit(self._unknown_revision(service, exc)) from None

    def _unknown_revision(self, service: str, exc: UnknownRevision) -> str:
        """What to do about a database another checkout migrated: alembic's traceback says neither."""
        if self.external_urls(service):
            start_over = f"give {service} an empty database"
        else:
            start_over = f"remove {self.data_dir} (all its data is lost)"
        return (
            f"Cannot migrate {service}: its database is at revision {', '.join(exc.revisions)}, which this checkout's "
            f"migrations do not have (another branch or a newer checkout migrated it).\nUse the checkout that "
            f"migrated it, or, to start over, {start_over}."
        )

    # -- processes ---------------------------------------------------------------------------
    def service_env(self, service: str) -> dict[str, str]:
        prefix = f"HISHAMOS_{service.upper()}_"
        app_url, owner_url, app_role = self.database_urls(service)
        env = dict(os.environ)
        env.update(
            {
                prefix + "PORT": str(self.ports.services[service]),
                prefix + "METRICS_PORT": str(self.ports.metrics[service]),
                prefix + "DATABASE_URL": app_url,
                prefix + "MIGRATION_DATABASE_URL": owner_url,
                prefix + "APP_ROLE": app_role,
                prefix + "IDENTITY_TARGET": f"127.0.0.1:{self.ports.services['identity']}",
                prefix + "PROJECTS_TARGET": f"127.0.0.1:{self.ports.services['projects']}",  # read by knowledge
            }
        )
        env.setdefault("HISHAMOS_IDENTITY_KEY_ENCRYPTION_KEY", self.secrets["identity_key_encryption_key"])
        env.setdefault("HISHAMOS_AGENTS_CREDENTIALS_KEY", self.secrets["agents_credentials_key"])
        env.setdefault(prefix + "PAGE_TOKEN_KEY", self.secrets[f"{service}_page_token_key"])
        env.setdefault("HISHAMOS_IDENTITY_MAIL_OUTBOX_DIR", str(self.outbox))
        # Each service's own credential for background work (AuthService.IssueServiceToken).
        credentials = {s: self.secrets[f"{s}_service"] for s in SERVICES}
        env.setdefault("HISHAMOS_IDENTITY_SERVICE_CREDENTIALS", json.dumps(credentials))
        env.setdefault(prefix + "SERVICE_CREDENTIAL", f"{service}:{credentials[service]}")
        # The platform operator's credential (AuthService.IssueOperatorToken): `operator:<secret>`.
        env.setdefault("HISHAMOS_IDENTITY_OPERATOR_CREDENTIALS", json.dumps({"operator": self.secrets["operator"]}))
        return env

    def _spawn(self, name: str, args: list[str], env: dict[str, str]) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        # A session of its own: Ctrl-C reaches only us, and we stop the children in order.
        with open(self.log_dir / f"{name}.log", "ab") as log, signals.deferred():
            self._log_starts[name] = log.tell()
            self.processes[name] = subprocess.Popen(
                args, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )

    def start_services(self) -> None:
        for service in SERVICES:
            self._spawn(service, [sys.executable, "-m", f"hishamos_{service}"], self.service_env(service))

    def envoy_config(self) -> dict[str, object]:
        return envoy.render(
            envoy.EnvoyConfig(
                backends={s: ("127.0.0.1", self.ports.services[s]) for s in SERVICES},
                descriptor_path=str(ROOT / "build" / "hishamos.pb"),
                listen_port=self.ports.envoy,
                admin_port=self.ports.envoy_admin,
            )
        )

    def start_envoy(self, concurrency: int = 1) -> None:
        config = self.data_dir / "envoy.yaml"
        config.write_text(envoy.to_yaml(self.envoy_config()))
        binary = Path(sys.executable).parent / "envoy"
        args = [str(binary), "-c", str(config), "--log-level", "warn", "--concurrency", str(concurrency)]
        self._spawn("envoy", [*args, "--base-id", str(self.ports.envoy)], dict(os.environ))

    def wait_healthy(self, timeout: float = 90.0) -> None:
        """Each service on its own port, then each through Envoy, must report SERVING."""
        deadline = time.monotonic() + timeout
        checks: list[tuple[str, str, tuple[tuple[str, str], ...]]]
        checks = [(s, f"127.0.0.1:{self.ports.services[s]}", ()) for s in SERVICES]
        checks += [("envoy", f"127.0.0.1:{self.ports.envoy}", ((envoy.BACKEND_HEADER, s),)) for s in SERVICES]
        for process, target, headers in checks:
            with grpc.insecure_channel(target) as channel:
                stub = health_pb2_grpc.HealthStub(channel)
                while not self._serving(stub, headers):
                    signals.check()
                    if self.processes[process].poll() is not None:
                        raise SystemExit(f"{process} exited during start-up:\n{self.log_tail(process)}")
                    if time.monotonic() > deadline:
                        raise SystemExit(f"{target} not healthy after {timeout:.0f}s:\n{self.log_tail(process)}")
                    time.sleep(0.1)

    @staticmethod
    def _serving(stub: health_pb2_grpc.HealthStub, headers: tuple[tuple[str, str], ...]) -> bool:
        try:
            reply = stub.Check(health_pb2.HealthCheckRequest(), timeout=1, metadata=headers)
        except grpc.RpcError:
            return False
        return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)

    def log_tail(self, name: str, lines: int = 30) -> str:
        """The last lines `name` wrote in this run: its log keeps earlier runs' too, errors of long ago among them."""
        path = self.log_dir / f"{name}.log"
        if not path.exists():
            return "(no log)"
        with path.open("rb") as log:
            log.seek(self._log_starts.get(name, 0))
            written = log.read().decode(errors="replace").splitlines()[-lines:]
        return "\n".join(written) or "(nothing logged)"

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> Stack:
        try:
            self.progress("==> starting PostgreSQL")
            self.start_postgres()
            self.progress("==> applying migrations")
            self.migrate_all()
            signals.check()
            self.progress("==> starting identity, agents, projects, knowledge and Envoy")
            self.start_services()
            self.start_envoy()
            self.wait_healthy()
        except BaseException:
            self.stop()
            raise
        return self

    def stop_processes(self, names: list[str], grace: float = 15.0) -> None:
        """SIGTERM (each drains its calls), then SIGKILL whatever outlives the grace."""
        running = [p for n in names if (p := self.processes.pop(n, None)) is not None and p.poll() is None]
        for process in running:
            process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace
        for process in running:
            try:
                process.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def stop(self) -> None:
        """Envoy, then the services, then PostgreSQL; a stop signal waits until all are stopped (cut short,
        the stop would leave the rest running). Safe to call again."""
        with signals.deferred():
            if (gateway := self.processes.get("envoy")) is not None and gateway.poll() is None:
                envoy.drain(self.ports.envoy_admin)  # Envoy exits at SIGTERM at once: let calls under way finish
            self.stop_processes(["envoy"])
            self.stop_processes(list(self.processes))
            if self._postgres_started:
                self.postgres.stop()
                self._postgres_started = False

    def __enter__(self) -> Stack:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
