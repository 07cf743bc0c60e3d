#!/bin/bash
# First start of the compose PostgreSQL: per service, a database, an owner role that migrates and an app role that
# owns nothing (what hishamos_devstack/provision.py does for the local stack). Passwords come from the environment.
set -euo pipefail
for service in identity agents projects knowledge; do
  upper=${service^^}
  owner_password_var="${upper}_OWNER_PASSWORD" app_password_var="${upper}_APP_PASSWORD"
  psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres \
    -v db="hishamos_${service}" -v owner="hishamos_${service}_owner" -v app="hishamos_${service}_app" \
    -v owner_password="${!owner_password_var}" -v app_password="${!app_password_var}" <<'SQL'
CREATE ROLE :"owner" LOGIN PASSWORD :'owner_password' NOSUPERUSER NOCREATEDB NOCREATEROLE NOBYPASSRLS;
CREATE ROLE :"app" LOGIN PASSWORD :'app_password' NOSUPERUSER NOCREATEDB NOCREATEROLE NOBYPASSRLS;
CREATE DATABASE :"db" OWNER :"owner";
REVOKE ALL ON DATABASE :"db" FROM PUBLIC;
GRANT CONNECT ON DATABASE :"db" TO :"app";
\connect :"db"
GRANT USAGE ON SCHEMA public TO :"app";
SQL
done
# pgvector is not a trusted extension: the superuser creates it.
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname hishamos_knowledge -c "CREATE EXTENSION IF NOT EXISTS vector"
