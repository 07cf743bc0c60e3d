"""Per-service databases and roles: an owner that migrates, and an app role that owns nothing."""

from __future__ import annotations

from dataclasses import dataclass

import psycopg
from psycopg import sql


@dataclass(frozen=True)
class ServiceDatabase:
    service: str
    host: str
    port: int
    owner_password: str
    app_password: str
    socket_dir: str = ""  # the services connect through the server's Unix socket here, when set

    @property
    def database(self) -> str:
        return f"hishamos_{self.service}"

    @property
    def owner(self) -> str:
        return f"hishamos_{self.service}_owner"

    @property
    def app(self) -> str:
        return f"hishamos_{self.service}_app"

    def url(self, role: str, password: str) -> str:
        if self.socket_dir:
            return f"postgresql+psycopg://{role}:{password}@/{self.database}?host={self.socket_dir}&port={self.port}"
        return f"postgresql+psycopg://{role}:{password}@{self.host}:{self.port}/{self.database}"

    @property
    def owner_url(self) -> str:
        return self.url(self.owner, self.owner_password)

    @property
    def app_url(self) -> str:
        return self.url(self.app, self.app_password)


def _ensure_role(cur: psycopg.Cursor, role: str, password: str) -> None:
    cur.execute("select 1 from pg_roles where rolname = %s", (role,))
    verb = "alter" if cur.fetchone() else "create"
    cur.execute(
        sql.SQL(verb + " role {} login password {} nosuperuser nocreatedb nocreaterole nobypassrls").format(
            sql.Identifier(role), sql.Literal(password)
        )
    )


def provision(admin_dsn: str, db: ServiceDatabase, extensions: tuple[str, ...] = ()) -> None:
    """Idempotent: safe on every start; passwords follow the current secrets."""
    with psycopg.connect(admin_dsn, autocommit=True) as conn, conn.cursor() as cur:
        _ensure_role(cur, db.owner, db.owner_password)
        _ensure_role(cur, db.app, db.app_password)
        cur.execute("select 1 from pg_database where datname = %s", (db.database,))
        if not cur.fetchone():
            cur.execute(
                sql.SQL("create database {} owner {}").format(sql.Identifier(db.database), sql.Identifier(db.owner))
            )
        cur.execute(sql.SQL("revoke all on database {} from public").format(sql.Identifier(db.database)))
        cur.execute(
            sql.SQL("grant connect on database {} to {}").format(sql.Identifier(db.database), sql.Identifier(db.app))
        )
    service_dsn = admin_dsn.rsplit("/", 1)[0] + "/" + db.database
    with psycopg.connect(service_dsn, autocommit=True) as conn, conn.cursor() as cur:
        cur.execute(sql.SQL("grant usage on schema public to {}").format(sql.Identifier(db.app)))
        for extension in extensions:
            # Created by the superuser here: pgvector is not a trusted extension.
            cur.execute(sql.SQL("create extension if not exists {}").format(sql.Identifier(extension)))
