"""The deployment files agree with each other and with the server: every kustomize overlay and
example renders (kubectl kustomize) and validates against the Kubernetes schemas offline
(kubernetes-validate); probes, ports, preStop and grace period match the server's flags and its
drain; the config files only use flags `macserve serve` has; the compose files and Prometheus
configuration hang together. Run by scripts/container_test.sh (which installs the tools)."""

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
DOCKER = ROOT / "docker"
BUILD_DIR = Path(os.environ.get("MACSERVE_BUILD_DIR", ROOT / "build"))
KUBERNETES_VERSION = "1.32.0"
RENDERED = ["overlays/cpu", "overlays/gpu", "examples/hpa", "examples/inference-pool"]
# Kinds from CRDs, which kubernetes-validate has no schema for.
CRD_KINDS = {"InferencePool", "HTTPRoute"}
IMAGE_UID = 10001


def render(path):
    if shutil.which("kubectl") is None:
        pytest.skip("kubectl is not installed")
    out = subprocess.run(["kubectl", "kustomize", str(K8S / path)], capture_output=True, text=True, check=False)
    assert out.returncode == 0, f"kubectl kustomize {path}: {out.stderr}"
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def find(docs, kind, name=None):
    found = [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def config_file(docs):
    """The macserve.toml of the rendered ConfigMap, as {flag: value}."""
    cm = [d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"].startswith("macserve-config")]
    assert len(cm) == 1
    text = cm[0]["data"]["macserve.toml"]
    values = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith(("#", "[")):
            continue
        key, _, value = line.partition("=")
        values[key.strip()] = value.split("#")[0].strip().strip('"')
    return values


def serve_flags():
    binary = BUILD_DIR / "bin" / "macserve"
    if not binary.exists():
        pytest.skip(f"{binary} is not built")
    out = subprocess.run([str(binary), "serve", "--help"], capture_output=True, text=True, check=True).stdout
    return set(re.findall(r"--([a-z0-9][a-z0-9-]*)", out))


@pytest.mark.parametrize("path", RENDERED)
def test_renders_and_validates(path):
    kv = pytest.importorskip("kubernetes_validate")
    docs = render(path)
    assert docs
    for doc in docs:
        if doc["kind"] in CRD_KINDS:
            continue
        try:
            kv.validate(doc, KUBERNETES_VERSION, strict=True)
        except kv.ValidationError as e:
            pytest.fail(f"{path}: {doc['kind']} {doc['metadata']['name']}: {e.message} at {list(e.path)}")


@pytest.mark.parametrize("overlay", ["overlays/cpu", "overlays/gpu"])
def test_deployment_matches_server(overlay):
    docs = render(overlay)
    dep = find(docs, "Deployment", "macserve")
    pod = dep["spec"]["template"]["spec"]
    labels = dep["spec"]["template"]["metadata"]["labels"]
    (c,) = pod["containers"]
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports == {"http": 8000, "grpc": 50051}

    # Every probe asks /health on the HTTP port; the startup probe allows minutes of model loading
    # before liveness can restart the pod.
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert c[probe]["httpGet"] == {"path": "/health", "port": "http"}, probe
    startup = c["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 300

    # Termination: preStop sleep, then SIGTERM and the server's drain, all inside the grace period.
    cfg = config_file(docs)
    drain = float(cfg["drain-timeout"])
    cmd = c["lifecycle"]["preStop"]["exec"]["command"]
    assert cmd[0] == "sleep"
    pre_stop = float(cmd[1])
    assert 0 < pre_stop < drain
    assert pod["terminationGracePeriodSeconds"] > pre_stop + drain

    # The image's user, checked by Kubernetes.
    sc = pod["securityContext"]
    assert sc["runAsNonRoot"] is True and sc["runAsUser"] == IMAGE_UID
    assert c["securityContext"]["allowPrivilegeEscalation"] is False

    # The config file is mounted where the args point.
    assert c["args"] == ["serve", "--config", "/etc/macserve/macserve.toml"]
    mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
    assert mounts["config"] == "/etc/macserve"
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["config"]["configMap"]["name"].startswith("macserve-config-")

    # The API key comes from an optional Secret.
    env = {e["name"]: e for e in c["env"]}
    ref = env["MACSERVE_API_KEY"]["valueFrom"]["secretKeyRef"]
    assert ref["optional"] is True

    # Service and PDB select the pods and point at named container ports.
    svc = find(docs, "Service", "macserve")
    assert svc["spec"]["selector"].items() <= labels.items()
    assert {p["name"]: p["targetPort"] for p in svc["spec"]["ports"]} == {"http": "http", "grpc": "grpc"}
    pdb = find(docs, "PodDisruptionBudget", "macserve")
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert dep["spec"]["selector"]["matchLabels"].items() <= labels.items()

    # Prometheus scrape annotations name the metrics port and path.
    ann = dep["spec"]["template"]["metadata"]["annotations"]
    assert ann["prometheus.io/port"] == str(ports["http"]) and ann["prometheus.io/path"] == "/metrics"

    gpus = c.get("resources", {}).get("limits", {}).get("nvidia.com/gpu")
    if overlay.endswith("gpu"):
        assert gpus == 1
        assert cfg["device"] == "cuda" and cfg["model"].startswith("/models/")
        assert mounts["models"] == "/models"
    else:
        assert gpus is None
        assert "memory" in c["resources"]["limits"]


@pytest.mark.parametrize("overlay", ["overlays/cpu", "overlays/gpu"])
def test_config_file_uses_real_flags(overlay):
    cfg = config_file(render(overlay))
    flags = serve_flags()
    unknown = set(cfg) - flags
    assert not unknown, f"{overlay}/macserve.toml sets flags macserve serve does not have: {unknown}"
    # host and port come from the image's MACSERVE_HOST/MACSERVE_PORT, which win over the file.
    assert "host" not in cfg and "port" not in cfg


def test_grpc_health_component(tmp_path):
    """An overlay plus components/grpc-health: readiness asks grpc.health.v1 on the grpc port."""
    (tmp_path / "kustomization.yaml").write_text(yaml.safe_dump({
        "apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
        # kustomize takes only relative paths.
        "resources": [os.path.relpath(K8S / "overlays" / "cpu", tmp_path)],
        "components": [os.path.relpath(K8S / "components" / "grpc-health", tmp_path)]}))
    docs = render(tmp_path)
    kv = pytest.importorskip("kubernetes_validate")
    for doc in docs:
        kv.validate(doc, KUBERNETES_VERSION, strict=True)
    (c,) = find(docs, "Deployment", "macserve")["spec"]["template"]["spec"]["containers"]
    grpc_port = {p["name"]: p["containerPort"] for p in c["ports"]}["grpc"]
    assert c["readinessProbe"]["grpc"] == {"port": grpc_port}
    assert c["livenessProbe"]["httpGet"]["path"] == "/health"


def test_hpa_scales_the_deployment_on_queue_depth():
    docs = render("examples/hpa")
    hpa = find(docs, "HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "macserve"}
    (metric,) = hpa["spec"]["metrics"]
    assert metric["pods"]["metric"]["name"] == "macserve_num_requests_waiting"
    rules = yaml.safe_load((K8S / "examples" / "hpa" / "prometheus-adapter-rules.yaml").read_text())["rules"]
    assert any(r["name"]["as"] == "macserve_num_requests_waiting" and "macserve:num_requests_waiting" in r["seriesQuery"]
               for r in rules)


def test_inference_pool_selects_the_pods_and_reads_macserve_metrics():
    docs = render("examples/inference-pool")
    dep = find(docs, "Deployment", "macserve")
    labels = dep["spec"]["template"]["metadata"]["labels"]
    pool = find(docs, "InferencePool")
    assert pool["spec"]["selector"]["matchLabels"].items() <= labels.items()
    http_port = {p["name"]: p["containerPort"] for p in dep["spec"]["template"]["spec"]["containers"][0]["ports"]}["http"]
    assert pool["spec"]["targetPorts"] == [{"number": http_port}]
    epp = find(docs, "Deployment", "macserve-epp")
    args = dict(a.lstrip("-").split("=", 1) for a in epp["spec"]["template"]["spec"]["containers"][0]["args"])
    assert args["pool-name"] == pool["metadata"]["name"]
    epp_svc = find(docs, "Service", pool["spec"]["endpointPickerRef"]["name"])
    assert epp_svc["spec"]["ports"][0]["port"] == pool["spec"]["endpointPickerRef"]["port"]["number"]
    # The metric names must be ones the server exports (server/metrics).
    metrics_src = "".join(p.read_text() for p in (ROOT / "server" / "metrics").rglob("*.cc"))
    for flag in ("total-queued-requests-metric", "total-running-requests-metric", "kv-cache-usage-percentage-metric"):
        assert f'"{args[flag]}"' in metrics_src, f"{flag}={args[flag]} is not a macserve metric"


def compose(*names):
    merged = {}
    for name in names:
        doc = yaml.safe_load((DOCKER / name).read_text())
        for svc, body in doc.get("services", {}).items():
            merged.setdefault(svc, {}).update(body)
    return merged


def seconds(text):
    m = re.fullmatch(r"(\d+)s", text)
    assert m, text
    return int(m.group(1))


def test_compose_server_prometheus_and_bench():
    svc = compose("compose.yaml")
    server = svc["macserve"]
    assert (ROOT / "docker" / server["build"]["context"] / server["build"]["dockerfile"]).resolve() == DOCKER / "Dockerfile.cpu"
    assert "127.0.0.1:8000:8000" in server["ports"]
    assert any("/health" in part for part in server["healthcheck"]["test"])
    drain = float(server["environment"]["MACSERVE_DRAIN_TIMEOUT"])
    assert seconds(server["stop_grace_period"]) > drain
    assert any(v.endswith(":/models:ro") for v in server["volumes"])

    prom = svc["prometheus"]
    prom_file = next(v.split(":")[0] for v in prom["volumes"] if "prometheus.yml" in v)
    cfg = yaml.safe_load((DOCKER / prom_file).read_text())
    (job,) = cfg["scrape_configs"]
    assert job["metrics_path"] == "/metrics"
    assert job["static_configs"][0]["targets"] == ["macserve:8000"]
    if shutil.which("promtool"):
        out = subprocess.run(["promtool", "check", "config", str(DOCKER / prom_file)], capture_output=True, text=True)
        assert out.returncode == 0, out.stdout + out.stderr

    bench = svc["bench"]
    assert bench["profiles"] == ["bench"] and bench["entrypoint"] == ["macserve-bench"]
    assert "--base-url=http://macserve:8000" in bench["command"]
    assert bench["depends_on"]["macserve"]["condition"] == "service_healthy"


def test_compose_gpu_override():
    svc = compose("compose.yaml", "compose.gpu.yaml")
    server = svc["macserve"]
    assert (ROOT / "docker" / server["build"]["context"] / server["build"]["dockerfile"]).resolve() == DOCKER / "Dockerfile"
    (dev,) = server["deploy"]["resources"]["reservations"]["devices"]
    assert dev["driver"] == "nvidia" and dev["capabilities"] == ["gpu"] and dev["count"] == 1
    assert server["environment"]["MACSERVE_DEVICE"] == "cuda"


@pytest.mark.parametrize("dockerfile", ["Dockerfile", "Dockerfile.cpu"])
def test_dockerfile_runtime_contract(dockerfile):
    """Both images: base images as arguments, user 10001, ports, health check, SIGTERM, the
    prebuilt target CI builds, and a runtime stage as the default (last) target."""
    text = (DOCKER / dockerfile).read_text()
    assert re.search(r"^ARG BUILDER_IMAGE=\S+", text, re.M) and re.search(r"^ARG RUNTIME_IMAGE=\S+", text, re.M)
    assert "FROM ${BUILDER_IMAGE} AS build" in text and "FROM ${RUNTIME_IMAGE} AS runtime-base" in text
    assert f"USER {IMAGE_UID}:{IMAGE_UID}" in text
    assert re.search(r"^EXPOSE 8000 50051$", text, re.M)
    assert re.search(r"^HEALTHCHECK .*\n.*/health", text, re.M)
    assert "STOPSIGNAL SIGTERM" in text
    assert "FROM runtime-base AS prebuilt" in text
    froms = re.findall(r"^FROM .* AS (\S+)$", text, re.M)
    assert froms[-1] == "runtime"
    assert "scripts/install_deps.sh" in text and "scripts/build.sh" in text and "docker/stage_runtime.sh" in text
