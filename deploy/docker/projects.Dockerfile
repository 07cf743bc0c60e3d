# The projects service. Build from the repository root:
#   docker build -f deploy/docker/projects.Dockerfile -t hishamos/projects .
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
COPY services/projects/ services/projects/
# A virtualenv apart from protogen's tools: copied whole into the runtime stage, it holds only what the service needs.
RUN python -m venv /opt/venv \
 && /opt/venv/bin/pip install --no-cache-dir -c requirements.lock ./protos/python ./libs/kit ./services/projects

# -- runtime -------------------------------------------------------------------------------------------------------
FROM python:3.11-slim
ENV PATH=/opt/venv/bin:$PATH PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 \
    HISHAMOS_PROJECTS_HOST=0.0.0.0 \
    HISHAMOS_PROJECTS_PORT=50053 \
    HISHAMOS_PROJECTS_METRICS_PORT=9466
COPY --from=build /opt/venv /opt/venv
# Migrations: `alembic -c /app/alembic.ini upgrade head` (script_location is relative to the .ini).
WORKDIR /app
COPY services/projects/alembic.ini ./
COPY services/projects/migrations/ migrations/
COPY deploy/docker/healthcheck.py ./
RUN useradd --system --uid 10001 --no-create-home hishamos
USER 10001
EXPOSE 50053 9466
HEALTHCHECK --interval=10s --timeout=5s --start-period=20s CMD ["python", "/app/healthcheck.py", "projects"]
CMD ["python", "-m", "hishamos_projects"]
