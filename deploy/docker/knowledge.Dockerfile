# The knowledge service. Build from the repository root:
#   docker build -f deploy/docker/knowledge.Dockerfile -t hishamos/knowledge .
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
COPY services/knowledge/ services/knowledge/
# A virtualenv apart from protogen's tools: copied whole into the runtime stage, it holds only what the service needs.
RUN python -m venv /opt/venv \
 && /opt/venv/bin/pip install --no-cache-dir -c requirements.lock ./protos/python ./libs/kit ./services/knowledge

# -- runtime -------------------------------------------------------------------------------------------------------
FROM python:3.11-slim
ENV PATH=/opt/venv/bin:$PATH PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 \
    HISHAMOS_KNOWLEDGE_HOST=0.0.0.0 \
    HISHAMOS_KNOWLEDGE_PORT=50054 \
    HISHAMOS_KNOWLEDGE_METRICS_PORT=9467
COPY --from=build /opt/venv /opt/venv
# Migrations: `alembic -c /app/alembic.ini upgrade head` (script_location is relative to the .ini).
WORKDIR /app
COPY services/knowledge/alembic.ini ./
COPY services/knowledge/migrations/ migrations/
COPY deploy/docker/healthcheck.py ./
RUN useradd --system --uid 10001 --no-create-home hishamos
USER 10001
EXPOSE 50054 9467
HEALTHCHECK --interval=10s --timeout=5s --start-period=20s CMD ["python", "/app/healthcheck.py", "knowledge"]
CMD ["python", "-m", "hishamos_knowledge"]
