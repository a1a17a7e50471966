"""The compose files stay what `scripts/compose_smoke.sh` brought up: every service healthy-checked and restarted,
`init` waited for, no published port in the main file (host networking refuses them), every service on the host's
network in the host variant, and the dashboard's queries over metrics the code exports."""
from __future__ import annotations

import json
import re

import yaml

from tests.helpers import ROOT

LONG_RUNNING = {"db", "mlflow", "api", "worker", "ui", "prometheus"}


def load(name: str) -> dict:
    return yaml.safe_load((ROOT / name).read_text())


def test_services_are_checked_restarted_and_wait_for_init():
    services = load("docker-compose.yml")["services"]
    assert LONG_RUNNING | {"init", "grafana"} <= set(services)
    for name in LONG_RUNNING:
        assert "healthcheck" in services[name], name
        assert services[name].get("restart") == "unless-stopped", name
        assert "ports" not in services[name], f"{name}: published ports belong in docker-compose.override.yml"
    assert services["init"]["restart"] == "no"
    for name in ("api", "worker"):
        assert services[name]["depends_on"]["init"] == {"condition": "service_completed_successfully"}
    assert services["ui"]["depends_on"]["api"] == {"condition": "service_healthy"}


def test_the_host_variant_puts_every_service_on_the_host_network_on_loopback():
    base, host = load("docker-compose.yml")["services"], load("docker-compose.host.yml")["services"]
    assert set(host) == set(base)
    for name, svc in host.items():
        assert svc["network_mode"] == "host", name
    text = "\n".join(line for line in (ROOT / "docker-compose.host.yml").read_text().splitlines()
                     if not line.lstrip().startswith("#"))
    assert not re.search(r"\b172\.(1[6-9]|2\d|3[01])\.", text)
    assert "BIND_HOST: 127.0.0.1" in text


def test_dashboard_queries_use_exported_metrics():
    dash = json.loads((ROOT / "docker/grafana/dashboards/clip-embedder.json").read_text())
    exprs = [t["expr"] for p in dash["panels"] for t in p["targets"]]
    code = "".join(p.read_text() for p in [*(ROOT / "api").glob("*.py"), *(ROOT / "clip_embedder/intake").glob("*.py")])
    for name in ("clip_embedder_queue_jobs", "clip_embedder_vectors", "clip_embedder_worker_jobs",
                 "clip_embedder_worker_images_indexed"):
        assert any(name in e for e in exprs) and f'"{name}"' in code, name
    assert any("http_request_duration_seconds_bucket" in e for e in exprs)  # prometheus-fastapi-instrumentator's
