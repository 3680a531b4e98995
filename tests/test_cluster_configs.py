"""Cluster files name only fields their tools know: `ray up` YAMLs against the schema Ray ships
(and its provider defaults), the job runtime env against Ray's runtime-env fields, and the GPU
configs against our own config model."""
import json
import os

import pytest
import yaml

CLUSTER_YAMLS = ("cluster/aws.yaml", "cluster/gcp.yaml")


def ray_schema() -> dict:
    import ray.autoscaler
    with open(os.path.join(os.path.dirname(ray.autoscaler.__file__), "ray-schema.json")) as f:
        return json.load(f)


def provider_defaults(provider: str) -> dict:
    import ray.autoscaler
    with open(os.path.join(os.path.dirname(ray.autoscaler.__file__), provider, "defaults.yaml")) as f:
        return yaml.safe_load(f)["provider"]


@pytest.mark.parametrize("path", CLUSTER_YAMLS)
def test_ray_up_yaml_follows_rays_schema(repo_root, path):
    import jsonschema
    config = yaml.safe_load((repo_root / path).read_text())
    jsonschema.validate(config, ray_schema())
    # the schema lets provider sections take anything: hold them to the keys Ray's defaults use
    known = set(provider_defaults(config["provider"]["type"])) | {"cache_stopped_nodes"}
    assert set(config["provider"]) <= known
    gpu_types = [t for t in config["available_node_types"].values() if t["resources"].get("GPU", 0) >= 1]
    assert any(t["resources"]["GPU"] == 8 for t in gpu_types) and all(t.get("min_workers", 0) == 0 for t in gpu_types)
    assert config["available_node_types"][config["head_node_type"]]["resources"].get("CPU") == 0
    assert any("pip install" in c and "torch==2.13.0" in c for c in config["setup_commands"])


def test_schema_check_catches_a_misspelt_field(repo_root):
    import jsonschema
    config = yaml.safe_load((repo_root / CLUSTER_YAMLS[0]).read_text())
    config["available_node_types"]["head"]["min_wrokers"] = 1
    with pytest.raises(jsonschema.ValidationError, match="min_wrokers"):
        jsonschema.validate(config, ray_schema())


def test_runtime_env_names_only_ray_fields(repo_root):
    from ray.runtime_env import RuntimeEnv
    env = yaml.safe_load((repo_root / "cluster/runtime_env.yaml").read_text())
    assert set(env) <= set(RuntimeEnv.known_fields)
    assert {".venv/", "artifacts/", ".git/"} <= set(env["excludes"])


@pytest.mark.parametrize("path,workers,zero", [("configs/gpu_single_node.yaml", 8, 2),
                                               ("configs/gpu_multi_node.yaml", 32, 3)])
def test_gpu_configs_train_on_gpus_in_bf16(repo_root, path, workers, zero):
    from pipeline.config import load_config
    cfg = load_config(repo_root / path)
    for section in (cfg.backdoor, cfg.backdoor_of("code"), cfg.safety_sft, cfg.reward_model, cfg.safety_rl):
        assert section.use_gpu and section.bf16
        assert (section.num_workers, section.zero_stage) == (workers, zero)
    assert cfg.evaluate.num_gpus == 1
    if workers > 8:  # more than one node: the artifact store must be shared
        assert cfg.storage.root.startswith("s3://")
