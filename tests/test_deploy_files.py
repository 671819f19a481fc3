"""The deployment files in ``deploy/`` are valid without a cluster: Kubernetes manifests against the API schemas
(``kubernetes-validate``, strict: unknown fields fail), the compose file against the Compose specification
(``check-jsonschema``'s vendored schema), the systemd unit with ``systemd-analyze verify``, the HAProxy config
with ``haproxy -c``; and they agree with each other (ports, health path, thread budget = CPU request)."""

from __future__ import annotations

import copy
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
K8S_VERSION = "1.30.0"


def _docs() -> list[tuple[str, dict[str, Any]]]:
    return [(p.name, d) for p in sorted((DEPLOY / "k8s").glob("*.yaml")) for d in yaml.safe_load_all(p.read_text())]


def _by_kind(kind: str, name: str) -> dict[str, Any]:
    return next(d for _, d in _docs() if d["kind"] == kind and d["metadata"]["name"] == name)


@pytest.mark.parametrize(("path", "doc"), _docs(), ids=[f"{p}:{d['kind']}" for p, d in _docs()])
def test_kubernetes_manifests_match_the_api_schema(path: str, doc: dict[str, Any]) -> None:
    kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def test_the_kubernetes_validator_rejects_a_broken_manifest() -> None:
    bad = copy.deepcopy(_by_kind("Deployment", "steadytext"))
    bad["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGet"]["pathh"] = "/health"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, K8S_VERSION, strict=True)


def test_the_deployment_probes_health_and_requests_its_thread_budget() -> None:
    deployment = _by_kind("Deployment", "steadytext")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"]["path"] == "/health"
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert container["resources"]["requests"]["cpu"] == env["STEADYTEXT_THREADS"] == env["STEADYTEXT_HOST_THREADS"]
    assert container["resources"]["limits"]["cpu"] == env["STEADYTEXT_THREADS"]
    assert env["STEADYTEXT_CACHE_URL"].endswith("@steadytext-redis:6379/0")
    assert deployment["spec"]["template"]["metadata"]["annotations"]["prometheus.io/path"] == "/metrics"
    grace = deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert grace > 5 + float(container["args"][container["args"].index("--shutdown-timeout") + 1])
    scrape = yaml.safe_load(_by_kind("ConfigMap", "steadytext-prometheus-scrape")["data"]["steadytext.yml"])
    assert scrape["scrape_configs"][0]["metrics_path"] == "/metrics"


def _check_compose(path: Path) -> subprocess.CompletedProcess[str]:
    tool = Path(sys.executable).with_name("check-jsonschema")
    cmd = [str(tool), "--builtin-schema", "vendor.compose-spec", str(path)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


def test_compose_file_matches_the_compose_spec(tmp_path: Path) -> None:
    done = _check_compose(DEPLOY / "docker-compose.yml")
    assert done.returncode == 0, done.stdout + done.stderr
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    balancer = compose["services"]["haproxy"]
    assert "./haproxy.cfg:/usr/local/etc/haproxy/haproxy.cfg:ro" in balancer["volumes"]  # the tested config
    assert {balancer["environment"][f"ST_REPLICA_{i}"] for i in (1, 2, 3)} == {f"replica{i}:8000" for i in (1, 2, 3)}
    broken = compose | {"services": {"redis": {**compose["services"]["redis"], "restart": 3, "imagee": "x"}}}
    (tmp_path / "compose.yml").write_text(yaml.safe_dump(broken))
    assert _check_compose(tmp_path / "compose.yml").returncode != 0


def test_systemd_unit_verifies(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed")
    text = (DEPLOY / "systemd" / "steadytext-async@.service").read_text()
    installed = "/opt/steadytext-async/.venv/bin/steadytext-async"
    assert installed in text
    # verify needs the ExecStart binary to exist: point it at this environment's console script
    unit = tmp_path / "steadytext-async@8001.service"
    unit.write_text(text.replace(installed, str(Path(sys.executable).with_name("steadytext-async"))))
    done = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout + done.stderr == "", done.stdout + done.stderr
    unit.write_text(text.replace("KillSignal=", "KillSignall="))  # a typo is reported
    done = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True, timeout=60)
    assert "KillSignall" in done.stdout + done.stderr


def test_haproxy_config_checks() -> None:
    haproxy = shutil.which("haproxy", path=os.environ.get("PATH", "") + ":/usr/sbin")
    if haproxy is None:
        pytest.skip("haproxy is not installed")
    env = {**os.environ, "ST_LB_BIND": "127.0.0.1:1", "ST_STATS_BIND": "127.0.0.1:2"}
    env |= {f"ST_REPLICA_{i}": f"127.0.0.1:{10 + i}" for i in (1, 2, 3)}
    for affinity in ("on", "off"):
        done = subprocess.run(
            [haproxy, "-c", "-f", str(DEPLOY / "haproxy.cfg")],
            env={**env, "ST_AFFINITY": affinity},
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert done.returncode == 0, done.stdout + done.stderr
