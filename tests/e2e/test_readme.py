"""The README's walkthrough, pasted as a newcomer would paste it, against a running stack."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from hishamos_devstack.stack import Stack
from hishamos_kit.settings import DEFAULT_PORTS

README = Path(__file__).resolve().parents[2] / "README.md"


def walkthrough(stack: Stack) -> str:
    """The README's shell blocks that talk to the platform, pointed at this stack's ports and data."""
    blocks = re.findall(r"```sh\n(.*?)```", README.read_text(), re.S)
    lines = "\n".join(block for block in blocks if "grpcurl" in block).splitlines()
    script = "\n".join(line for line in lines if not line.startswith("make "))  # the stack runs already
    script = script.replace("localhost:8080", f"127.0.0.1:{stack.ports.envoy}")
    for service, port in DEFAULT_PORTS.items():
        script = script.replace(f"localhost:{port}", f"127.0.0.1:{stack.ports.services[service]}")
    return script.replace(".data/", f"{stack.data_dir}/")


def test_the_readme_walkthrough_runs_as_written(stack: Stack) -> None:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    ran = subprocess.run(["bash", "-c", walkthrough(stack)], capture_output=True, text=True, env=env, timeout=300)
    out = ran.stdout + ran.stderr
    shown = [
        '"slug": "apollo"',  # a project created and listed
        '"field":"project.slug"',  # bad input answered with its field violations
        '"permissions": [',  # the roles and what they allow
        '"role": "ROLE_CONTRIBUTOR"',  # a user on the team
        '"title": "Sign-in page"',  # a story assigned to them
        '"action": "role.assigned"',  # the audit log
        "ORGANIZATION_SUSPENDED",  # an operator suspends: sign-in is refused
        '"state": "STATE_ACTIVE"',  # and reactivates
        '"status": "SERVING"',
    ]
    for expected in shown:
        assert expected in out, f"{expected} not in the walkthrough's output:\n{out}"
    assert out.count("ERROR:") == 2, f"only the two errors the README shows:\n{out}"
