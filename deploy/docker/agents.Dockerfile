# The agents service. Build from the repository root:
#   docker build -f deploy/docker/agents.Dockerfile -t hishamos/agents .
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
COPY services/agents/ services/agents/
# A virtualenv apart from protogen's tools: copied whole into the runtime stage, it holds only what the service needs.
RUN python -m venv /opt/venv \
 && /opt/venv/bin/pip install --no-cache-dir -c requirements.lock ./protos/python ./libs/kit ./services/agents

# -- runtime -------------------------------------------------------------------------------------------------------
FROM python:3.11-slim
ENV PATH=/opt/venv/bin:$PATH PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 \
    HISHAMOS_AGENTS_HOST=0.0.0.0 \
    HISHAMOS_AGENTS_PORT=50052 \
    HISHAMOS_AGENTS_METRICS_PORT=9465
COPY --from=build /opt/venv /opt/venv
# Migrations: `alembic -c /app/alembic.ini upgrade head` (script_location is relative to the .ini).
WORKDIR /app
COPY services/agents/alembic.ini ./
COPY services/agents/migrations/ migrations/
COPY deploy/docker/healthcheck.py ./
RUN useradd --system --uid 10001 --no-create-home hishamos
USER 10001
EXPOSE 50052 9465
HEALTHCHECK --interval=10s --timeout=5s --start-period=20s CMD ["python", "/app/healthcheck.py", "agents"]
CMD ["python", "-m", "hishamos_agents"]
