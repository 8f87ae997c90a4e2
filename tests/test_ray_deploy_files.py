"""deploy/: the Ray Serve config file and the KubeRay RayService manifest hold a Serve config that Ray's own
schema accepts, whose builder arguments our builder accepts and whose deployment names exist in the
application it builds. (The manifest cannot be applied here: no Kubernetes; this checks what can be.)"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from ray.serve.schema import ServeDeploySchema

from rwkv7_provider.errors import ParameterError
from rwkv7_provider.server.ray_app import BuildArgs, build

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"


def serve_configs() -> dict[str, dict]:
    manifest = yaml.safe_load((DEPLOY / "rayservice.yaml").read_text())
    return {"serve_config.yaml": yaml.safe_load((DEPLOY / "serve_config.yaml").read_text()),
            "rayservice.yaml": yaml.safe_load(manifest["spec"]["serveConfigV2"])}


@pytest.mark.parametrize("name", ["serve_config.yaml", "rayservice.yaml"])
def test_the_serve_config_is_valid_and_names_our_deployments(name, monkeypatch):
    config = ServeDeploySchema.model_validate(serve_configs()[name])
    (app,) = config.applications
    assert app.import_path == "rwkv7_provider.server.ray_app:build"
    args = BuildArgs.model_validate(app.args)
    monkeypatch.setenv("RWKV7_API_KEY", "test-key")  # host 0.0.0.0 requires one, as on the cluster
    built = build(app.args)
    names = {built._bound_deployment.name, *(a._bound_deployment.name for a in built._bound_deployment.init_args
                                             if hasattr(a, "_bound_deployment"))}
    assert {d.name for d in app.deployments} <= names
    assert args.cache_dir and args.replicas >= 1
    replica = next(d for d in app.deployments if d.name == "RWKV7Replica")
    assert replica.autoscaling_config["min_replicas"] >= 2  # a replica can die without an outage


def test_the_builder_refuses_an_exposed_endpoint_without_an_api_key(monkeypatch):
    monkeypatch.delenv("RWKV7_API_KEY", raising=False)
    with pytest.raises(ParameterError, match="API key"):
        build({"host": "0.0.0.0"})


def test_the_manifest_is_a_rayservice_with_the_shared_cache_and_the_key_everywhere():
    manifest = yaml.safe_load((DEPLOY / "rayservice.yaml").read_text())
    assert (manifest["apiVersion"], manifest["kind"]) == ("ray.io/v1", "RayService")
    cluster = manifest["spec"]["rayClusterConfig"]
    pods = [cluster["headGroupSpec"]["template"]["spec"]] + [g["template"]["spec"] for g in cluster["workerGroupSpecs"]]
    for pod in pods:
        (container,) = pod["containers"]
        assert {"name": "cache", "mountPath": "/var/cache/rwkv7"} in container["volumeMounts"]
        assert any(e["name"] == "RWKV7_API_KEY" for e in container["env"])
    assert cluster["rayVersion"] == "2.60.0"
