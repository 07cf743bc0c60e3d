"""`make up` and `make migrate`: the local stack from the command line."""

from __future__ import annotations

import argparse
import signal
import threading

from hishamos_devstack import envoy
from hishamos_devstack.stack import ROOT, Stack

DATA = ROOT / ".data"


def up(stack: Stack) -> None:
    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with stack:
        p = stack.ports
        print(
            f"""
HishamOS is up.
  API (gRPC, gRPC-Web, JSON)  127.0.0.1:{p.envoy}     Envoy admin 127.0.0.1:{p.envoy_admin}
  identity {p.services["identity"]}  agents {p.services["agents"]}  projects {p.services["projects"]}  knowledge {p.services["knowledge"]}  (direct gRPC)
  PostgreSQL 127.0.0.1:{p.postgres}  data in {stack.data_dir}  logs in {stack.log_dir}
  Mail (password resets, email verification) lands in {stack.outbox}

Sign up the first organization and its admin:
  .venv/bin/grpcurl -plaintext -d '{{"organization_slug":"acme","organization_display_name":"Acme","email":"admin@acme.test","username":"admin","password":"correct-horse-battery"}}' \\
    127.0.0.1:{p.envoy} hishamos.identity.v1.AuthService/SignUp
Platform operators (suspend or reactivate an organization, set its quotas) sign in with the credential
`operator:<secret>`, the secret being "operator" in {stack.data_dir}/secrets.json:
  .venv/bin/grpcurl -plaintext -H "x-operator-credential: operator:$(python3 -c 'import json; print(json.load(open("{stack.data_dir}/secrets.json"))["operator"])')" \\
    127.0.0.1:{p.envoy} hishamos.identity.v1.AuthService/IssueOperatorToken
The README walks on from there. Ctrl-C stops everything.""",
            flush=True,
        )
        while not stop.wait(1):
            for name, process in stack.processes.items():
                if process.poll() is not None:
                    print(f"{name} exited (code {process.returncode}); last lines:\n{stack.log_tail(name)}")
                    stop.set()
        print("\nstopping…", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(prog="hishamos-devstack")
    parser.add_argument("command", choices=["up", "migrate", "envoy-config"])
    opts = parser.parse_args()
    if opts.command == "envoy-config":
        config = envoy.to_yaml(envoy.render(envoy.deployment()))
        # The kustomize copy too: kustomize reads no file outside its own directory.
        for path in ("deploy/envoy/envoy.yaml", "deploy/k8s/gateway-envoy.yaml"):
            (ROOT / path).write_text(config)
        return
    stack = Stack(DATA)
    if opts.command == "up":
        up(stack)
    else:
        try:
            stack.start_postgres()
            stack.migrate_all()
        finally:
            stack.stop()


if __name__ == "__main__":
    main()
