"""The Helm chart, the KServe manifests and the Prometheus adapter rule, validated offline.

The chart is rendered with deploy/helm/render_offline.py (and with ``helm template`` too where a
helm binary is installed); every object is validated against the strict Kubernetes JSON schemas
that kubernetes-validate ships, and the KServe custom resources against the minimal schemas in
schemas/. Then the pieces are checked against each other and against Volley itself: ports,
probes, settings, user ids, metric names.
"""

from __future__ import annotations

import copy
import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from volley.settings import ServerSettings, env_name

REPO = Path(__file__).resolve().parents[3]
DEPLOY = REPO / "deploy"
CHART = DEPLOY / "helm" / "volley"
KSERVE = DEPLOY / "kserve"
ADAPTER_VALUES = DEPLOY / "prometheus-adapter" / "values.yaml"

Objects = list[dict[str, Any]]

#: Value overrides the chart is rendered with: every template branch is taken by one of them.
VARIANTS: dict[str, dict[str, Any]] = {
    "defaults": {},
    "autoscaling": {"autoscaling": {"enabled": True}},
    "autoscaling-no-behavior": {"autoscaling": {"enabled": True, "behavior": None}},
    "existing-claim": {
        "modelRepository": {"existingClaim": "my-models", "claim": {"create": False}}
    },
    "nfs-volume": {
        "modelRepository": {
            "volume": {"nfs": {"server": "nfs.example", "path": "/export/models"}},
            "claim": {"create": False},
        }
    },
    "storage-class": {"modelRepository": {"claim": {"storageClassName": "fast"}}},
    "everything-set": {
        "image": {"tag": "1.2.3", "pullPolicy": "Always"},
        "imagePullSecrets": [{"name": "registry"}],
        "extraEnv": [{"name": "OMP_NUM_THREADS", "value": "4"}],
        "podAnnotations": {"example.com/team": "ml"},
        "podLabels": {"example.com/tier": "inference"},
        "service": {"type": "LoadBalancer", "annotations": {"example.com/lb": "internal"}},
        "nodeSelector": {"kubernetes.io/arch": "amd64"},
        "tolerations": [{"key": "gpu", "operator": "Exists", "effect": "NoSchedule"}],
        "affinity": {
            "podAntiAffinity": {
                "preferredDuringSchedulingIgnoredDuringExecution": [
                    {
                        "weight": 100,
                        "podAffinityTerm": {
                            "topologyKey": "kubernetes.io/hostname",
                            "labelSelector": {"matchLabels": {"app.kubernetes.io/name": "volley"}},
                        },
                    }
                ]
            }
        },
        "config": {"VOLLEY_MODEL_CONTROL_MODE": "explicit", "VOLLEY_LOAD_MODEL": '["*"]'},
    },
    "no-scrape-annotations": {"metrics": {"scrapeAnnotations": False}},
    "other-ports": {
        "ports": {"grpc": 9001, "metrics": 9002},
        "readinessProbe": {"grpc": {"port": 9001}},
    },
}


def one(objects: Objects, kind: str) -> dict[str, Any]:
    found = [o for o in objects if o["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, got {len(found)}"
    return found[0]


def container(objects: Objects) -> dict[str, Any]:
    (c,) = one(objects, "Deployment")["spec"]["template"]["spec"]["containers"]
    return c


def port_numbers(c: dict[str, Any]) -> dict[str, int]:
    return {p["name"]: p["containerPort"] for p in c["ports"]}


def dockerfile_uid(name: str) -> int:
    match = re.search(r"^USER\s+(\d+)", (REPO / name).read_text(), re.M)
    assert match, f"{name} has no numeric USER"
    return int(match.group(1))


@pytest.fixture(scope="module", params=sorted(VARIANTS))
def variant(request: pytest.FixtureRequest, render: Callable[..., Objects]) -> tuple[str, Objects]:
    return request.param, render(VARIANTS[request.param])


# --- the chart --------------------------------------------------------------------------------


def test_chart_metadata() -> None:
    meta = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert meta["apiVersion"] == "v2"
    assert meta["name"] == CHART.name
    assert re.fullmatch(r"\d+\.\d+\.\d+", meta["version"])
    assert isinstance(meta["appVersion"], str)
    assert (CHART / "values.yaml").is_file() and (CHART / "templates").is_dir()


def test_every_rendered_object_is_a_valid_kubernetes_object(
    variant: tuple[str, Objects], validate_k8s: Callable[[dict[str, Any]], None]
) -> None:
    _, objects = variant
    assert objects
    for obj in objects:
        validate_k8s(obj)
    names = [(o["kind"], o["metadata"]["name"]) for o in objects]
    assert len(names) == len(set(names)), names


def test_default_objects(render: Callable[..., Objects]) -> None:
    kinds = sorted(o["kind"] for o in render())
    assert kinds == ["ConfigMap", "Deployment", "PersistentVolumeClaim", "Service"]
    kinds = sorted(o["kind"] for o in render(VARIANTS["autoscaling"]))
    assert "HorizontalPodAutoscaler" in kinds


def test_names_and_labels_follow_the_release(render: Callable[..., Objects]) -> None:
    objects = render(release="inference")
    for obj in objects:
        assert obj["metadata"]["name"].startswith("inference")
        assert obj["metadata"]["labels"]["app.kubernetes.io/instance"] == "inference"
    deployment = one(objects, "Deployment")
    selector = deployment["spec"]["selector"]["matchLabels"]
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert selector.items() <= pod_labels.items()
    assert one(objects, "Service")["spec"]["selector"] == selector


def test_probes_use_the_health_endpoints(variant: tuple[str, Objects]) -> None:
    _, objects = variant
    c = container(objects)
    ports = port_numbers(c)
    # Readiness is grpc.health.v1 on the gRPC port: SERVING exactly when Volley is ready.
    assert c["readinessProbe"]["grpc"]["port"] == ports["grpc"]
    assert c["readinessProbe"]["grpc"].get("service", "") == ""
    for probe in ("startupProbe", "livenessProbe"):
        handler = c[probe].get("tcpSocket") or c[probe].get("httpGet") or c[probe].get("grpc")
        assert handler, probe
        port = handler["port"]
        assert port in ports or port in ports.values(), f"{probe} port {port} is not served"


def test_service_exposes_http_grpc_and_metrics(variant: tuple[str, Objects]) -> None:
    _, objects = variant
    ports = port_numbers(container(objects))
    service = {p["name"]: p for p in one(objects, "Service")["spec"]["ports"]}
    assert sorted(service) == ["grpc", "http", "metrics"]
    for name, port in service.items():
        assert port["targetPort"] == name and name in ports
        assert port["port"] == ports[name]
    assert service["grpc"]["appProtocol"] == "kubernetes.io/h2c"


def test_default_ports_are_volleys(render: Callable[..., Objects]) -> None:
    assert port_numbers(container(render())) == {"http": 8000, "grpc": 8001, "metrics": 8002}


def test_prometheus_scrape_annotations(variant: tuple[str, Objects]) -> None:
    name, objects = variant
    annotations = one(objects, "Deployment")["spec"]["template"]["metadata"].get("annotations")
    if name == "no-scrape-annotations":
        assert annotations is None
        return
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == str(port_numbers(container(objects))["metrics"])
    assert annotations["prometheus.io/path"] == "/metrics"


def test_runs_as_the_images_non_root_user_on_a_read_only_root(
    render: Callable[..., Objects],
) -> None:
    objects = render()
    pod = one(objects, "Deployment")["spec"]["template"]["spec"]
    c = container(objects)
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == dockerfile_uid("Dockerfile") != 0
    assert pod["automountServiceAccountToken"] is False
    security = c["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"]
    # The one writable path: /tmp on an emptyDir (the native transport's Unix socket).
    volumes = {v["name"]: v for v in pod["volumes"]}
    tmp = next(m for m in c["volumeMounts"] if m["mountPath"] == "/tmp")
    assert "emptyDir" in volumes[tmp["name"]] and not tmp.get("readOnly")
    assert c["resources"]["requests"] and c["resources"]["limits"]


def test_model_repository_volume(variant: tuple[str, Objects]) -> None:
    name, objects = variant
    pod = one(objects, "Deployment")["spec"]["template"]["spec"]
    c = container(objects)
    env = one(objects, "ConfigMap")["data"]
    (mount,) = [m for m in c["volumeMounts"] if m["name"] == "models"]
    assert mount["mountPath"] == "/models" and mount["readOnly"] is True
    assert str(Path(mount["mountPath"])) in yaml.safe_load(env["VOLLEY_MODEL_REPOSITORY"])
    (volume,) = [v for v in pod["volumes"] if v["name"] == "models"]
    claims = [o["metadata"]["name"] for o in objects if o["kind"] == "PersistentVolumeClaim"]
    if name == "nfs-volume":
        assert volume["nfs"]["server"] == "nfs.example" and not claims
    elif name == "existing-claim":
        assert volume["persistentVolumeClaim"]["claimName"] == "my-models" and not claims
    else:
        assert claims == [volume["persistentVolumeClaim"]["claimName"]]


def test_configmap_keys_are_volley_settings(variant: tuple[str, Objects]) -> None:
    _, objects = variant
    env = one(objects, "ConfigMap")["data"]
    fields = {env_name(f) for f in ServerSettings.model_fields}
    assert env and set(env) <= fields, sorted(set(env) - fields)
    c = container(objects)
    assert c["envFrom"] == [
        {"configMapRef": {"name": one(objects, "ConfigMap")["metadata"]["name"]}}
    ]
    for extra in c.get("env", []):
        assert not extra["name"].startswith("VOLLEY_") or extra["name"] in fields


def test_default_values_use_only_existing_settings() -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    fields = {env_name(f) for f in ServerSettings.model_fields}
    assert set(values["config"]) <= fields


def test_container_gets_valid_volley_settings(
    variant: tuple[str, Objects], settings_from: Callable[..., ServerSettings]
) -> None:
    _, objects = variant
    c = container(objects)
    settings = settings_from(c["command"] + c.get("args", []), one(objects, "ConfigMap")["data"])
    ports = port_numbers(c)
    assert settings.grpc_port == ports["grpc"]
    assert settings.metrics_port == ports["metrics"]
    assert settings.grpc_address == "0.0.0.0"
    assert [str(p) for p in settings.model_repository] == ["/models"]
    # Kubernetes must not SIGKILL before Volley's grace period and its unload margin end.
    pod = one(objects, "Deployment")["spec"]["template"]["spec"]
    assert pod["terminationGracePeriodSeconds"] >= settings.exit_timeout_secs + 10


def test_horizontal_pod_autoscaler_on_queue_depth(render: Callable[..., Objects]) -> None:
    objects = render(VARIANTS["autoscaling"])
    hpa = one(objects, "HorizontalPodAutoscaler")
    deployment = one(objects, "Deployment")
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": deployment["metadata"]["name"],
    }
    (metric,) = hpa["spec"]["metrics"]
    assert metric["type"] == "Pods"
    assert metric["pods"]["metric"]["name"] == "volley_queue_depth"
    assert metric["pods"]["target"]["type"] == "AverageValue"
    assert 1 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]
    # The autoscaler owns the replica count.
    assert "replicas" not in deployment["spec"]
    assert "replicas" in one(render(), "Deployment")["spec"]


def test_hpa_metric_is_served_by_the_adapter_rule(render: Callable[..., Objects]) -> None:
    hpa = one(render(VARIANTS["autoscaling"]), "HorizontalPodAutoscaler")
    metric = hpa["spec"]["metrics"][0]["pods"]["metric"]["name"]
    adapter = yaml.safe_load(ADAPTER_VALUES.read_text())
    assert adapter["rules"]["default"] is False
    (rule,) = adapter["rules"]["custom"]
    series = re.fullmatch(r"(\w+)\{(.*)\}", rule["seriesQuery"])
    assert series, rule["seriesQuery"]
    assert 'pod!=""' in series.group(2) and 'namespace!=""' in series.group(2)
    assert re.fullmatch(rule["name"]["matches"], series.group(1))
    assert rule["name"]["as"] == metric == series.group(1)
    assert rule["resources"]["overrides"] == {
        "namespace": {"resource": "namespace"},
        "pod": {"resource": "pod"},
    }
    # The adapter fills the template per request; with no label matchers and grouping by pod
    # it is the documented series query.
    query = (
        rule["metricsQuery"]
        .replace("<<.Series>>", series.group(1))
        .replace("{<<.LabelMatchers>>}", "")
        .replace("<<.GroupBy>>", "pod")
    )
    assert query == "sum(volley_queue_depth) by (pod)"
    assert "sum(volley_queue_depth) by (pod)" in ADAPTER_VALUES.read_text()


def test_queue_depth_is_a_metric_volley_exports() -> None:
    import inspect

    metrics = pytest.importorskip("volley.telemetry.metrics")
    assert '"volley_queue_depth"' in inspect.getsource(metrics)


# --- values.schema.json and broken manifests --------------------------------------------------

BAD_VALUES = {
    "unknown key": {"replicas": 3},
    "config value not a string": {"config": {"VOLLEY_LOG_LEVEL": 10}},
    "config key not VOLLEY_*": {"config": {"LOG_LEVEL": "INFO"}},
    "grpc port set twice": {"config": {"VOLLEY_GRPC_PORT": "9000"}},
    "port out of range": {"ports": {"grpc": 70000}},
    "two probe handlers": {"readinessProbe": {"tcpSocket": {"port": "grpc"}}},
    "relative mount path": {"modelRepository": {"mountPath": "models"}},
    "bad access mode": {"modelRepository": {"claim": {"accessModes": ["ReadOnce"]}}},
}


@pytest.mark.parametrize("override", BAD_VALUES.values(), ids=list(BAD_VALUES))
def test_bad_values_are_refused(override: dict[str, Any], render: Callable[..., Objects]) -> None:
    with pytest.raises(jsonschema.ValidationError):
        render(override)


def _set(obj: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    obj = copy.deepcopy(obj)
    *parents, last = path.split(".")
    node: Any = obj
    for part in parents:
        node = node[int(part)] if part.isdigit() else node[part]
    node[int(last) if last.isdigit() else last] = value
    return obj


CONTAINER = "spec.template.spec.containers.0"
BROKEN_DEPLOYMENTS = {
    "port as text": (f"{CONTAINER}.ports.0.containerPort", "8000x"),
    "misspelled field": (f"{CONTAINER}.readinesProbe", {"grpc": {"port": 8001}}),
    "grpc probe on a named port": (f"{CONTAINER}.readinessProbe.grpc.port", "grpc"),
    "env value not a string": (f"{CONTAINER}.env", [{"name": "A", "value": 1}]),
    "no containers": ("spec.template.spec.containers", None),
    "replicas as text": ("spec.replicas", "one"),
}


@pytest.mark.parametrize("path,value", BROKEN_DEPLOYMENTS.values(), ids=list(BROKEN_DEPLOYMENTS))
def test_a_broken_deployment_fails_validation(
    path: str, value: Any, render: Callable[..., Objects], validate_k8s: Callable[..., None]
) -> None:
    deployment = one(render(), "Deployment")
    validate_k8s(deployment)
    with pytest.raises(jsonschema.ValidationError):
        validate_k8s(_set(deployment, path, value))


def test_a_broken_hpa_and_configmap_fail_validation(
    render: Callable[..., Objects], validate_k8s: Callable[..., None]
) -> None:
    objects = render(VARIANTS["autoscaling"])
    hpa = one(objects, "HorizontalPodAutoscaler")
    with pytest.raises(jsonschema.ValidationError):
        validate_k8s(_set(hpa, "spec.metrics.0.pods.metric", {"selector": {}}))
    with pytest.raises(jsonschema.ValidationError):
        validate_k8s(_set(hpa, "spec.maxReplicas", "eight"))
    with pytest.raises(jsonschema.ValidationError):
        validate_k8s(_set(one(objects, "ConfigMap"), "data.VOLLEY_GRPC_PORT", 8001))


# --- KServe -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def runtime() -> dict[str, Any]:
    return yaml.safe_load((KSERVE / "servingruntime.yaml").read_text())


@pytest.fixture(scope="module")
def isvc() -> dict[str, Any]:
    return yaml.safe_load((KSERVE / "inferenceservice.yaml").read_text())


def test_kserve_manifests_match_the_crd_schemas(
    runtime: dict[str, Any], isvc: dict[str, Any], validate_crd: Callable[..., None]
) -> None:
    validate_crd(runtime)
    validate_crd(isvc)


BROKEN_KSERVE = {
    "runtime: unknown protocol": ("runtime", "spec.protocolVersions.0", "grpc-v3"),
    "runtime: unknown spec field": ("runtime", "spec.supportedModelFormat", []),
    "runtime: format without name": ("runtime", "spec.supportedModelFormats.0", {"version": "1"}),
    "runtime: container port as text": ("runtime", "spec.containers.0.ports.0.containerPort", "x"),
    "runtime: misspelled container field": ("runtime", "spec.containers.0.arg", []),
    "isvc: no model format": ("isvc", "spec.predictor.model.modelFormat", {}),
    "isvc: unknown protocol": ("isvc", "spec.predictor.model.protocolVersion", "grpc"),
    "isvc: misspelled storage field": ("isvc", "spec.predictor.model.storageURI", "s3://x"),
    "isvc: wrong apiVersion": ("isvc", "apiVersion", "serving.kserve.io/v1alpha1"),
}


@pytest.mark.parametrize("which,path,value", BROKEN_KSERVE.values(), ids=list(BROKEN_KSERVE))
def test_broken_kserve_manifests_fail_validation(
    which: str,
    path: str,
    value: Any,
    runtime: dict[str, Any],
    isvc: dict[str, Any],
    validate_crd: Callable[..., None],
) -> None:
    obj = {"runtime": runtime, "isvc": isvc}[which]
    with pytest.raises((jsonschema.ValidationError, LookupError)):
        validate_crd(_set(obj, path, value))


def test_serving_runtime_serves_onnx_over_v2(runtime: dict[str, Any]) -> None:
    spec = runtime["spec"]
    assert runtime["apiVersion"] == "serving.kserve.io/v1alpha1"
    assert runtime["kind"] == "ServingRuntime"
    assert "onnx" in {f["name"] for f in spec["supportedModelFormats"]}
    assert {"v2", "grpc-v2"} <= set(spec["protocolVersions"])
    assert spec["containers"][0]["name"] == "kserve-container"


def test_inference_service_uses_the_runtime(runtime: dict[str, Any], isvc: dict[str, Any]) -> None:
    model = isvc["spec"]["predictor"]["model"]
    assert model["runtime"] == runtime["metadata"]["name"]
    assert model["modelFormat"]["name"] in {
        f["name"] for f in runtime["spec"]["supportedModelFormats"]
    }
    assert model["protocolVersion"] in runtime["spec"]["protocolVersions"]


def test_serving_runtime_ports_match_the_chart(
    runtime: dict[str, Any], render: Callable[..., Objects]
) -> None:
    chart = port_numbers(container(render()))
    (c,) = runtime["spec"]["containers"]
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    # KServe routes gRPC to a port named h2c (or grpc), REST to http1; the first is the default.
    assert c["ports"][0]["name"] == "h2c"
    assert ports == {"h2c": chart["grpc"], "http1": chart["http"]}
    assert c["readinessProbe"]["grpc"]["port"] == chart["grpc"]
    annotations = runtime["spec"]["annotations"]
    assert annotations["prometheus.kserve.io/port"] == str(chart["metrics"])
    assert annotations["prometheus.kserve.io/path"] == "/metrics"


def test_serving_runtime_command_is_valid_for_volley(
    runtime: dict[str, Any], settings_from: Callable[..., ServerSettings]
) -> None:
    (c,) = runtime["spec"]["containers"]
    env = {e["name"]: e["value"] for e in c.get("env", [])}
    fields = {env_name(f) for f in ServerSettings.model_fields}
    assert set(env) <= fields
    settings = settings_from(c["command"] + c["args"], env)
    # KServe's storage initializer puts the model repository at /mnt/models.
    assert [str(p) for p in settings.model_repository] == ["/mnt/models"]
    assert settings.grpc_port == c["ports"][0]["containerPort"]
    assert settings.metrics_port == int(runtime["spec"]["annotations"]["prometheus.kserve.io/port"])


def test_serving_runtime_security(runtime: dict[str, Any]) -> None:
    (c,) = runtime["spec"]["containers"]
    security = c["securityContext"]
    assert security["runAsNonRoot"] is True
    assert security["runAsUser"] == dockerfile_uid("Dockerfile")
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    volumes = {v["name"]: v for v in runtime["spec"]["volumes"]}
    tmp = next(m for m in c["volumeMounts"] if m["mountPath"] == "/tmp")
    assert "emptyDir" in volumes[tmp["name"]]


# --- helm itself, where installed -------------------------------------------------------------

HELM = shutil.which("helm")
needs_helm = pytest.mark.skipif(
    HELM is None, reason="no helm binary (the offline renderer validated the chart instead)"
)


@needs_helm
def test_helm_lint() -> None:
    assert HELM is not None
    result = subprocess.run(
        [HELM, "lint", "--strict", str(CHART)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr


@needs_helm
@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_helm_template_matches_the_offline_renderer(
    name: str, tmp_path: Path, render: Callable[..., Objects]
) -> None:
    assert HELM is not None
    values = tmp_path / "values.yaml"
    values.write_text(yaml.safe_dump(VARIANTS[name]))
    result = subprocess.run(
        [HELM, "template", "volley", str(CHART), "-f", str(values)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    helm_objects = [doc for doc in yaml.safe_load_all(result.stdout) if doc]

    def key(o: dict[str, Any]) -> tuple[str, str]:
        return o["kind"], o["metadata"]["name"]

    assert sorted(helm_objects, key=key) == sorted(render(VARIANTS[name]), key=key)
