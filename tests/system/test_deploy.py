"""The production deployment files: docker-compose.yml, Dockerfile, deploy/ and the env files.

Docker does not run here, so these tests read the files: the compose file parses, every image
is pinned, every variable handed to Chorus is one Chorus reads, published ports do not clash,
Prometheus scrapes the worker service where it listens, Grafana provisions the dashboard that
exists, and the README's settings table lists every variable.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from chorus.config.settings_doc import all_variables, is_read_by_chorus
from chorus.contracts.names import search_attribute_types

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
CHORUS_SERVICES = ("worker", "codec-server", "api")

# An exact version tag (`16.11-bookworm`, `v3.5.0`, `1.31.0`; no bare major) and/or a digest.
PINNED_IMAGE = re.compile(
    r"^(?P<repo>[a-z0-9][a-z0-9._/-]*)"
    r"(?::(?P<tag>v?\d+\.\d+(?:\.\d+)*(?:-[a-z0-9.]+)*))?"
    r"(?:@sha256:[0-9a-f]{64})?$"
)
ENV_LINE = re.compile(r"^\s*#?\s*([A-Z][A-Z0-9_]*)=", re.MULTILINE)
INTERPOLATION = re.compile(r"\$\{([A-Z][A-Z0-9_]*)")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE_FILE.read_text())
    assert isinstance(data, dict)
    return data


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = compose["services"]
    return found


def _environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {str(k): str(v) for k, v in env.items()}


def _host_ports(service: dict[str, Any]) -> list[tuple[str, int, int]]:
    """``(host ip, host port, container port)`` of every published port (short syntax)."""
    published = []
    for spec in service.get("ports") or []:
        parts = str(spec).split(":")
        assert len(parts) == 3, f"publish with an explicit interface: {spec!r}"
        published.append((parts[0], int(parts[1]), int(parts[2].split("/")[0])))
    return published


def test_compose_parses_and_has_the_stack(services):
    expected = {
        "temporal-db",
        "temporal-schema",
        "temporal",
        "temporal-admin",
        "temporal-ui",
        "chorus-db",
        "worker",
        "codec-server",
        "api",
        "prometheus",
        "grafana",
    }
    assert expected <= set(services)
    for name, service in services.items():
        for dep in service.get("depends_on") or {}:
            assert dep in services, f"{name} depends on unknown service {dep}"
    # Workers wait for the namespace and search attributes, not just for the server.
    assert services["worker"]["depends_on"]["temporal-admin"]["condition"] == (
        "service_completed_successfully"
    )
    assert services["temporal"]["environment"]["DB"] == "postgres12"
    assert str(services["worker"]["deploy"]["replicas"]).startswith("${WORKER_REPLICAS")


def test_every_image_is_pinned(services):
    for name, service in services.items():
        image = service.get("image")
        assert image, f"{name} has no image tag"
        match = PINNED_IMAGE.match(image)
        assert match and (match["tag"] or "@sha256:" in image), f"{name}: {image} is not pinned"
        assert "latest" not in image


def test_dockerfile_base_image_is_pinned_and_runs_the_worker_unprivileged():
    text = (ROOT / "Dockerfile").read_text()
    bases = re.findall(r"^FROM\s+(\S+)", text, re.MULTILINE)
    assert bases
    for base in bases:
        match = PINNED_IMAGE.match(base)
        assert match and (match["tag"] or "@sha256:" in base), f"{base} is not pinned"
        assert base.startswith("python:3.11.")
    assert re.search(r"^USER\s+(?!root\b|0\b)\S+", text, re.MULTILINE)
    assert 'CMD ["python", "-m", "worker"]' in text
    assert re.search(r"^EXPOSE\s+9464\s+9465$", text, re.MULTILINE)
    assert "HEALTHCHECK" in text and "/healthz" in text
    assert "CHORUS_METRICS_HOST=0.0.0.0" in text
    # No `local` extra (it compiles llama.cpp): extras only through the EXTRAS build arg.
    assert "[local]" not in text and 'ARG EXTRAS=""' in text


def test_dockerfile_sets_only_variables_chorus_reads():
    text = (ROOT / "Dockerfile").read_text()
    names = re.findall(r"\b(CHORUS_[A-Z0-9_]+)=", text)
    assert names and all(is_read_by_chorus(n) for n in names), names


def test_chorus_services_get_only_variables_chorus_reads(services):
    for name in CHORUS_SERVICES:
        env = _environment(services[name])
        unknown = sorted(k for k in env if not is_read_by_chorus(k))
        assert not unknown, f"{name} sets variables Chorus does not read: {unknown}"
        assert services[name]["env_file"] == ["chorus.env"]
    worker_env = _environment(services["worker"])
    assert worker_env["CHORUS_METRICS_HOST"] == "0.0.0.0"
    assert worker_env["TEMPORAL_ADDRESS"] == "temporal:7233"
    assert worker_env["DATABASE_URL"].startswith("postgresql://chorus:")
    assert "@chorus-db:5432/chorus" in worker_env["DATABASE_URL"]


def test_chorus_env_example_lists_only_variables_chorus_reads():
    names = ENV_LINE.findall((ROOT / "chorus.env.example").read_text())
    assert "OPENAI_API_KEY" in names and "CHORUS_CODEC_KEYS" in names
    unknown = sorted(n for n in names if not is_read_by_chorus(n))
    assert not unknown, f"chorus.env.example names variables Chorus does not read: {unknown}"


def test_env_example_documents_exactly_the_compose_variables():
    compose_vars = set(INTERPOLATION.findall(COMPOSE_FILE.read_text()))
    documented = set(ENV_LINE.findall((ROOT / ".env.example").read_text()))
    assert compose_vars == documented


def test_published_ports_are_unique_and_local(services):
    seen: dict[int, str] = {}
    for name, service in services.items():
        for interface, host_port, _ in _host_ports(service):
            assert interface == "127.0.0.1", f"{name} publishes {host_port} on {interface}"
            assert host_port not in seen, f"{name} and {seen[host_port]} both publish {host_port}"
            seen[host_port] = name
    # Scaled replicas cannot share host ports: workers publish none.
    assert "ports" not in services["worker"]
    assert {7233, 8080, 9090, 3000, 8081} <= set(seen)


def test_bind_mounts_exist(services):
    for name, service in services.items():
        for volume in service.get("volumes") or []:
            source = str(volume).split(":")[0]
            if source.startswith("./"):
                assert (ROOT / source).exists(), f"{name} mounts missing {source}"


def _mounted_at(service: dict[str, Any], host_path: str) -> str:
    for volume in service.get("volumes") or []:
        parts = str(volume).split(":")
        if parts[0] == host_path:
            return parts[1]
    raise AssertionError(f"{host_path} is not mounted")


def test_prometheus_scrapes_every_worker_replica_and_the_server(services):
    config_path = "./deploy/prometheus/prometheus.yml"
    assert _mounted_at(services["prometheus"], config_path) == "/etc/prometheus/prometheus.yml"
    assert _mounted_at(services["prometheus"], "./deploy/prometheus/alerts.yml") == (
        "/etc/prometheus/alerts.yml"
    )
    config = yaml.safe_load((ROOT / config_path).read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    worker_env = _environment(services["worker"])
    for job, port_var in (
        ("chorus-worker", "CHORUS_METRICS_PORT"),
        ("chorus-worker-sdk", "CHORUS_SDK_METRICS_PORT"),
    ):
        (sd,) = jobs[job]["dns_sd_configs"]
        assert sd["names"] == ["worker"] and sd["type"] == "A"
        assert sd["port"] == int(worker_env[port_var])
        assert str(sd["port"]) in services["worker"]["expose"]
    (target,) = jobs["temporal-server"]["static_configs"][0]["targets"]
    host, port = target.split(":")
    assert host in services
    assert _environment(services[host])["PROMETHEUS_ENDPOINT"].endswith(f":{port}")


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool not installed")
def test_promtool_accepts_the_prometheus_config():
    result = subprocess.run(
        ["promtool", "check", "config", "prometheus.yml"],
        cwd=ROOT / "deploy" / "prometheus",
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "5 rules found" in result.stdout + result.stderr


def test_grafana_provisions_prometheus_and_the_dashboard(services):
    grafana = services["grafana"]
    provisioning = ROOT / "deploy" / "grafana" / "provisioning"
    (datasource,) = yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text())[
        "datasources"
    ]
    assert datasource["type"] == "prometheus"
    assert datasource["url"] == "http://prometheus:9090"
    (provider,) = yaml.safe_load((provisioning / "dashboards" / "chorus.yml").read_text())[
        "providers"
    ]
    mounted = _mounted_at(grafana, "./deploy/grafana/chorus-dashboard.json")
    assert Path(mounted).parent.as_posix() == provider["options"]["path"]
    dashboard = json.loads((ROOT / "deploy" / "grafana" / "chorus-dashboard.json").read_text())
    assert dashboard["uid"] == "chorus-overview" and dashboard["panels"]
    assert _mounted_at(grafana, "./deploy/grafana/provisioning/dashboards") == (
        "/etc/grafana/provisioning/dashboards"
    )


def test_admin_job_registers_every_chorus_search_attribute():
    script = (ROOT / "deploy" / "temporal" / "setup-namespace.sh").read_text()
    pairs = set(re.findall(r"\b(Chorus\w+):(\w+)\b", script))
    assert pairs == set(search_attribute_types())


def test_readme_settings_table_lists_every_variable():
    readme = (ROOT / "README.md").read_text()
    section = readme.split("\n## Settings", 1)[1].split("\n## ", 1)[0]
    rows = "\n".join(line for line in section.splitlines() if line.startswith("|"))
    missing = [v.name for v in all_variables() if f"`{v.name}`" not in rows]
    assert not missing, (
        f"README settings table lacks {missing} (python -m chorus.config.settings_doc)"
    )
