"""The Swarm runtime's specs, checked against the Docker Engine API's ServiceSpec schema.

No Swarm runs here, so the test checks what SwarmRuntime would send: the
ServiceSpec and SecretSpec, validated against the Engine API's own definitions
(tests/containers/engine_api_service_spec.yaml, an excerpt of moby's v1.45
swagger) with unknown properties refused, since the Engine ignores them silently.
"""

from __future__ import annotations

import base64
import dataclasses
import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from backpack.errors import BadRequest
from backpack.platform.runtime_docker import (
    ContainerConfig,
    SwarmConfig,
    SwarmRuntime,
    secret_spec,
    service_spec,
)

SWAGGER = yaml.safe_load((Path(__file__).parent / "engine_api_service_spec.yaml").read_text())
KEY = "bpk_" + "s" * 43
CONFIG = ContainerConfig(
    image="registry.example.com/backpack:1.2.3",
    project="backpack",
    network="backpack",
    domain="example.com",
    tls=True,
    memory="512m",
    cpus=0.5,
)
SWARM = SwarmConfig(
    replicas=3,
    constraints=("node.labels.backpack == true",),
    spread="node.labels.zone",
    database_secret="backpack_database_url",
)


def _closed(schema: Any) -> Any:
    """The swagger schema as JSON Schema, with every object closed to unknown properties."""
    if isinstance(schema, list):
        return [_closed(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    closed = {key: _closed(value) for key, value in schema.items()}
    if closed.get("type") == "object" and "properties" in closed:
        closed.setdefault("additionalProperties", False)
    return closed


def _errors(definition: str, document: dict[str, Any]) -> list[str]:
    schema = {"$ref": f"#/definitions/{definition}", "definitions": _closed(SWAGGER["definitions"])}
    validator = jsonschema.Draft4Validator(schema)
    return [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(document)]


def _spec(replicas: int = 3) -> dict[str, Any]:
    return service_spec(
        "todo", CONFIG, SWARM, ("keyid", "backpack-todo-key-1"), ("dbid", "dburl"), replicas
    )


def test_the_service_spec_is_a_valid_engine_api_service_spec() -> None:
    assert _errors("ServiceSpec", _spec()) == []


def test_the_schema_catches_what_the_engine_would_silently_ignore() -> None:
    spec = _spec()
    container = spec["TaskTemplate"]["ContainerSpec"]
    container["Healthcheck"] = container.pop("HealthCheck")  # Docker's container spelling
    assert any("Healthcheck" in error for error in _errors("ServiceSpec", spec))
    spec = _spec()
    spec["UpdateConfig"]["Order"] = "rolling"
    assert _errors("ServiceSpec", spec)


def test_replicas_rollout_placement_and_network() -> None:
    spec = _spec()
    assert spec["Name"] == "backpack-todo"
    assert spec["Mode"] == {"Replicated": {"Replicas": 3}}
    assert _spec(replicas=0)["Mode"] == {"Replicated": {"Replicas": 0}}  # a stopped backpack
    assert spec["UpdateConfig"] == {
        "Parallelism": 1,
        "Delay": 5_000_000_000,
        "FailureAction": "rollback",
        "Monitor": 30_000_000_000,
        "MaxFailureRatio": 0,
        "Order": "start-first",
    }
    assert spec["RollbackConfig"]["FailureAction"] == "pause"
    task = spec["TaskTemplate"]
    assert task["Placement"] == {
        "Constraints": ["node.labels.backpack == true"],
        "Preferences": [{"Spread": {"SpreadDescriptor": "node.labels.zone"}}],
    }
    assert task["Networks"] == [{"Target": "backpack", "Aliases": ["backpack-todo"]}]
    assert task["Resources"] == {
        "Limits": {"NanoCPUs": 500_000_000, "MemoryBytes": 512 * 2**20, "Pids": 512}
    }
    assert task["RestartPolicy"]["Condition"] == "on-failure"
    container = task["ContainerSpec"]
    assert container["Image"] == "registry.example.com/backpack:1.2.3"
    assert container["Args"][:3] == ["serve-instance", "--data", "/data"]
    assert container["User"] == "10001:10001"
    assert container["HealthCheck"]["Retries"] == 3
    assert "127.0.0.1:8000/api/health" in container["HealthCheck"]["Test"][-1]


def test_traefik_routes_the_backpacks_host_with_tls() -> None:
    labels = _spec()["Labels"]
    assert labels["traefik.enable"] == "true"
    assert labels["traefik.http.routers.backpack-todo.rule"] == "Host(`todo.example.com`)"
    assert labels["traefik.http.routers.backpack-todo.entrypoints"] == "websecure"
    assert labels["traefik.http.routers.backpack-todo.tls.certresolver"] == "letsencrypt"
    assert labels["traefik.http.services.backpack-todo.loadbalancer.server.port"] == "8000"
    assert labels["traefik.docker.network"] == "backpack"


def test_the_key_and_database_url_are_secret_files_never_environment() -> None:
    spec = _spec()
    container = spec["TaskTemplate"]["ContainerSpec"]
    assert container["Secrets"] == [
        {
            "File": {"Name": "backpack_secret_key", "UID": "10001", "GID": "10001", "Mode": 0o400},
            "SecretID": "keyid",
            "SecretName": "backpack-todo-key-1",
        },
        {
            "File": {
                "Name": "backpack_database_url",
                "UID": "10001",
                "GID": "10001",
                "Mode": 0o400,
            },
            "SecretID": "dbid",
            "SecretName": "dburl",
        },
    ]
    assert "BACKPACK_SECRET_KEY_FILE=/run/secrets/backpack_secret_key" in container["Env"]
    assert "BACKPACK_DATABASE_URL_FILE=/run/secrets/backpack_database_url" in container["Env"]
    assert KEY not in json.dumps(spec)


def test_the_secret_spec_carries_the_key_and_is_named_after_it() -> None:
    spec = secret_spec("todo", CONFIG, KEY)
    assert _errors("SecretSpec", spec) == []
    assert base64.b64decode(spec["Data"]).decode() == KEY
    assert spec["Name"].startswith("backpack-todo-key-")
    assert spec["Labels"] == {"io.backpack.project": "backpack", "io.backpack.name": "todo"}
    rotated = secret_spec("todo", CONFIG, "bpk_" + "t" * 43)
    assert rotated["Name"] != spec["Name"]  # Swarm secrets are immutable: a new key, a new one


def test_without_a_database_secret_only_the_key_is_mounted() -> None:
    spec = service_spec("todo", CONFIG, SwarmConfig(), ("keyid", "k"), None, 1)
    assert _errors("ServiceSpec", spec) == []
    container = spec["TaskTemplate"]["ContainerSpec"]
    assert [s["File"]["Name"] for s in container["Secrets"]] == ["backpack_secret_key"]
    assert spec["TaskTemplate"]["Placement"] == {"Constraints": []}


def test_the_swarm_runtime_needs_an_overlay_network(tmp_path: Path) -> None:
    with pytest.raises(BadRequest, match="overlay network"):
        SwarmRuntime(tmp_path, object(), dataclasses.replace(CONFIG, network="host"))
