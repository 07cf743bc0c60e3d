"""The deployment files are generated from code and accepted by the tools that will run them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

from hishamos_devstack import envoy
from hishamos_devstack.stack import ROOT


def test_committed_envoy_config_is_the_generated_one() -> None:
    committed = (ROOT / "deploy" / "envoy" / "envoy.yaml").read_text()
    assert committed == envoy.to_yaml(envoy.render(envoy.deployment())), (
        "run `python -m hishamos_devstack envoy-config`"
    )


def test_envoy_accepts_the_deployment_config(tmp_path: Path) -> None:
    config = yaml.safe_load((ROOT / "deploy" / "envoy" / "envoy.yaml").read_text())
    # Validate mode resolves nothing over DNS but does read the descriptor set: point it at ours.
    hcm = config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    transcoder = next(f for f in hcm["http_filters"] if f["name"] == "envoy.filters.http.grpc_json_transcoder")
    transcoder["typed_config"]["proto_descriptor"] = str(ROOT / "build" / "hishamos.pb")
    local = tmp_path / "envoy.yaml"
    local.write_text(yaml.safe_dump(config))
    binary = Path(sys.executable).parent / "envoy"
    result = subprocess.run([str(binary), "--mode", "validate", "-c", str(local)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "configuration" in result.stdout and "OK" in result.stdout
