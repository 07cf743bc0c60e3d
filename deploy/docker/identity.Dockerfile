# The identity service. Build from the repository root:
#   docker build -f deploy/docker/identity.Dockerfile -t hishamos/identity .
# The same image runs the service (default CMD) and its migrations (see compose.yaml / k8s job-migrate).

# -- build: generate the gRPC stubs, then install the service with exactly the pinned dependencies ----------------
FROM python:3.11-slim AS build
WORKDIR /src
COPY requirements.lock ./
# Only what tools/protogen.py needs, at the versions in the lock (-c: pins without installing the whole dev set).
RUN pip install --no-cache-dir -c requirements.lock grpcio-tools buf-bin mypy-protobuf googleapis-common-protos
COPY buf.yaml ./
COPY tools/protogen.py tools/
COPY protos/ protos/
RUN python tools/protogen.py
COPY libs/kit/ libs/kit/
COPY services/identity/ services/identity/
# A virtualenv apart from protogen's tools: copied whole into the runtime stage, it holds only what the service needs.
RUN python -m venv /opt/venv \
 && /opt/venv/bin/pip install --no-cache-dir -c requirements.lock ./protos/python ./libs/kit ./services/identity

# -- runtime -------------------------------------------------------------------------------------------------------
FROM python:3.11-slim
ENV PATH=/opt/venv/bin:$PATH PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 \
    HISHAMOS_IDENTITY_HOST=0.0.0.0 \
    HISHAMOS_IDENTITY_PORT=50051 \
    HISHAMOS_IDENTITY_METRICS_PORT=9464
COPY --from=build /opt/venv /opt/venv
# Migrations: `alembic -c /app/alembic.ini upgrade head` (script_location is relative to the .ini).
WORKDIR /app
COPY services/identity/alembic.ini ./
COPY services/identity/migrations/ migrations/
COPY deploy/docker/healthcheck.py ./
# The mail outbox (used when no SMTP server is set) exists owned by the service user, so a volume mounted there
# starts writable.
RUN useradd --system --uid 10001 --no-create-home hishamos \
 && mkdir -p /var/lib/hishamos/outbox && chown 10001 /var/lib/hishamos/outbox
USER 10001
EXPOSE 50051 9464
HEALTHCHECK --interval=10s --timeout=5s --start-period=20s CMD ["python", "/app/healthcheck.py", "identity"]
CMD ["python", "-m", "hishamos_identity"]
