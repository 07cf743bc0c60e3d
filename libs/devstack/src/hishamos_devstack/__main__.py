"""`make up` and `make migrate`: the local stack from the command line."""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from pathlib import Path

from hishamos_devstack import envoy, signals
from hishamos_devstack.stack import ROOT, Ports, Stack

DATA = ROOT / ".data"


def say(text: str) -> None:
    """Print, unless the terminal is gone (SIGHUP): the stack must still be stopped."""
    with contextlib.suppress(OSError):
        print(text, flush=True)


# How a taken port shows in what a part of the stack says when it cannot start: a service's gRPC or
# metrics port, PostgreSQL's, Envoy's.
PORT_TAKEN = ("cannot listen on", "cannot serve metrics on", "is the port taken", "Address already in use")


def banner(stack: Stack) -> str:
    p = stack.ports
    return f"""
HishamOS is up.
  API (gRPC, gRPC-Web, JSON)  127.0.0.1:{p.envoy}     Envoy admin 127.0.0.1:{p.envoy_admin}
  identity {p.services["identity"]}  agents {p.services["agents"]}  projects {p.services["projects"]}  knowledge {p.services["knowledge"]}  (direct gRPC)
  PostgreSQL 127.0.0.1:{p.postgres}  data in {stack.data_dir}  logs in {stack.log_dir}
  Mail (password resets, email verification) lands in {stack.outbox}

Sign up the first organization and its admin (once: the data stays for the next `make up`, and the README's
AuthService/Login signs in again):
  .venv/bin/grpcurl -plaintext -d '{{"organization_slug":"acme","organization_display_name":"Acme","email":"admin@acme.test","username":"admin","password":"correct-horse-battery"}}' \\
    127.0.0.1:{p.envoy} hishamos.identity.v1.AuthService/SignUp
Platform operators (suspend or reactivate an organization, set its quotas) sign in with the credential
`operator:<secret>`, the secret being "operator" in {stack.data_dir}/secrets.json:
  .venv/bin/grpcurl -plaintext -H "x-operator-credential: operator:$(python3 -c 'import json; print(json.load(open("{stack.data_dir}/secrets.json"))["operator"])')" \\
    127.0.0.1:{p.envoy} hishamos.identity.v1.AuthService/IssueOperatorToken
The README walks on from there. Ctrl-C (or SIGTERM) stops everything."""


def watch(stack: Stack) -> int:
    """Wait until a process of the stack exits (the stack is then of no use: 1) or a stop signal arrives."""
    while True:
        time.sleep(1)
        signals.check()  # a stop whose exception Python dropped
        for name, process in stack.processes.items():
            if process.poll() is not None:
                say(f"{name} exited (code {process.returncode}); last lines:\n{stack.log_tail(name)}\n\nstopping…")
                return 1


def up(stack: Stack, free_ports: bool) -> int:
    """Start the stack and keep it until a stop signal (0) or a process's death (1); the exit status.
    A stop signal during start-up stops at once what has started, without a banner (128 + the signal)."""
    signals.raise_on_stop()
    running = False
    try:
        try:
            stack.start()  # on failure or a stop signal, it stops what it has started
        except SystemExit as failed:
            if free_ports or not any(sign in str(failed.code) for sign in PORT_TAKEN):
                raise
            # A port of ours may be taken by another program, or be the local end of someone's outgoing
            # connection (the usual ports lie in Linux's range for those); setting the port is no help here.
            raise SystemExit(
                f"{failed.code}\n\nThe stack's usual ports are fixed; `make up UP_ARGS=--free-ports` picks free ones "
                "and prints them."
            ) from None
        running = True
        say(banner(stack))
        return watch(stack)
    except signals.Stopped as stopped:
        say(f"\n{stopped}: stopping…" if running else f"\n{stopped} during start-up: stopped.")
        return 0 if running else 128 + stopped.signum
    finally:
        signals.ignore_stop()  # a second Ctrl-C while stopping is no error and cuts nothing short
        stack.stop()


def main() -> None:
    parser = argparse.ArgumentParser(prog="hishamos-devstack")
    parser.add_argument("command", choices=["up", "migrate", "envoy-config"])
    parser.add_argument("--data-dir", type=Path, default=DATA, help="where the stack keeps its state (.data)")
    parser.add_argument(
        "--free-ports", action="store_true", help="listen on free ports (shown at start) instead of the usual ones"
    )
    opts = parser.parse_args()
    if opts.command == "envoy-config":
        config = envoy.to_yaml(envoy.render(envoy.deployment()))
        # The kustomize copy too: kustomize reads no file outside its own directory.
        for path in ("deploy/envoy/envoy.yaml", "deploy/k8s/gateway-envoy.yaml"):
            (ROOT / path).write_text(config)
        return
    stack = Stack(opts.data_dir.resolve(), Ports.free() if opts.free_ports else None)
    if opts.command == "up":
        sys.exit(up(stack, opts.free_ports))
    signals.raise_on_stop()  # `migrate` too stops PostgreSQL on SIGTERM or SIGHUP, not only on Ctrl-C
    try:
        stack.start_postgres()
        stack.migrate_all()
    except signals.Stopped as stopped:
        say(f"\n{stopped} while migrating: stopped.")
        sys.exit(128 + stopped.signum)
    finally:
        signals.ignore_stop()
        stack.stop()


if __name__ == "__main__":
    main()
