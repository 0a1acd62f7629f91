"""deploy/kubernetes: every manifest against the Kubernetes schemas, the kustomize layout,
and the references a user would otherwise only meet at `kubectl apply` time or when a pod
fails to start: selectors, ports, volumes, Secrets, ServiceAccounts, and every BERTH_*
variable and probe checked against the daemon's own settings."""

from __future__ import annotations

import copy
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any
from unittest import mock

import kubernetes_validate
import pytest
import yaml

from berth.common.addresses import parse_address
from berth.common.settings import DaemonSettings
from berth.gateway.settings import GatewaySettings
from berth.mcp.settings import McpdSettings
from tests.support.deploy import DAEMONS, REPO, accepted_env

Doc = dict[str, Any]

KUBE = REPO / "deploy" / "kubernetes"
K8S_VERSION = kubernetes_validate.latest_version()
KUSTOMIZATION = "kustomization.yaml"
WORKLOADS = {"Deployment", "DaemonSet", "StatefulSet"}

# The Secrets people create themselves (README: "On Kubernetes"), and their keys.
USER_SECRETS = {
    "berth-tls": {"ca.pem", "server.pem", "server-key.pem", "client.pem", "client-key.pem"},
    "berth-mcpd-key": {"BERTH_SECRET_KEY"},
}
# The daemons' settings classes by image name.
SETTINGS = {f"berth-{daemon}": settings for daemon, settings in DAEMONS.items()}
# What the downward API gives a pod, for building its environment here.
FIELD_SAMPLES = {"status.hostIP": "192.0.2.10", "spec.nodeName": "node-a"}
NETWORKD_CAPABILITIES = {"NET_ADMIN", "SYS_ADMIN", "NET_RAW"}


# ---- loading ---------------------------------------------------------------------------


def load(path: Path) -> list[Doc]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def manifest_files() -> list[Path]:
    return sorted(p for p in KUBE.rglob("*.yaml") if p.name != KUSTOMIZATION)


def kustomization_dirs() -> list[Path]:
    return sorted(p.parent for p in KUBE.rglob(KUSTOMIZATION))


def kustomization(directory: Path) -> Doc:
    return yaml.safe_load((directory / KUSTOMIZATION).read_text())


def buildable_dirs() -> list[Path]:
    """Kustomizations people apply (Components are only parts of them)."""
    return [d for d in kustomization_dirs() if kustomization(d)["kind"] == "Kustomization"]


def resolve(directory: Path) -> list[Doc]:
    """The documents of a kustomization's resources and components (patches not applied:
    used where the kustomization has none)."""
    spec = kustomization(directory)
    docs: list[Doc] = []
    for entry in [*spec.get("resources", []), *spec.get("components", [])]:
        target = directory / entry
        docs.extend(resolve(target) if target.is_dir() else load(target))
    return docs


def kustomize_build(directory: Path) -> list[Doc]:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not on PATH: `kubectl kustomize` builds cannot be checked")
    result = subprocess.run(
        [kubectl, "kustomize", str(directory)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def label(path: Path) -> str:
    return str(path.relative_to(REPO))


# ---- schema validation -----------------------------------------------------------------


def validate_document(document: Doc) -> None:
    """Raises unless the document is valid for Kubernetes K8S_VERSION (strict: no unknown
    fields). An unknown kind raises too (SchemaNotFoundError)."""
    kubernetes_validate.validate(document, K8S_VERSION, strict=True)


def schema_problems(documents: list[Doc]) -> list[str]:
    problems = []
    for doc in documents:
        try:
            validate_document(doc)
        except kubernetes_validate.ValidationError as error:
            path = ".".join(str(p) for p in error.path)
            problems.append(f"{doc.get('kind')}/{name_of(doc)}: {path}: {error.message}")
        except kubernetes_validate.SchemaNotFoundError as error:
            problems.append(error.message)
    return problems


@pytest.mark.parametrize("path", manifest_files(), ids=label)
def test_every_manifest_validates_against_the_kubernetes_schemas(path: Path) -> None:
    documents = load(path)

    assert documents, f"{label(path)} holds no document"
    assert schema_problems(documents) == []


@pytest.mark.parametrize(
    "breakage",
    [
        lambda d: d["spec"].update(replicas="two"),
        lambda d: d["spec"].pop("selector"),
        lambda d: d["spec"]["template"]["spec"].update(hostNetwrk=True),
        lambda d: d.update(kind="Deploymnet"),
    ],
    ids=["replicas-not-a-number", "required-field-missing", "unknown-field", "unknown-kind"],
)
def test_a_broken_manifest_is_rejected(breakage: Any) -> None:
    document = copy.deepcopy(find(load(KUBE / "base" / "gateway-deployment.yaml"), "Deployment"))
    assert schema_problems([document]) == []

    breakage(document)

    assert schema_problems([document]) != []


# ---- the kustomize layout --------------------------------------------------------------


def layout_problems(directory: Path) -> list[str]:
    spec = kustomization(directory)
    problems = []
    for entry in spec.get("resources", []):
        target = directory / entry
        if target.is_dir() and kind_of_dir(target) != "Kustomization":
            problems.append(f"{label(directory)}: resource {entry} is not a Kustomization")
        elif not target.is_dir() and not target.is_file():
            problems.append(f"{label(directory)}: resource {entry} does not exist")
    for entry in spec.get("components", []):
        if kind_of_dir(directory / entry) != "Component":
            problems.append(f"{label(directory)}: component {entry} is not a Component")
    for patch in spec.get("patches", []):
        if "path" in patch and not (directory / patch["path"]).is_file():
            problems.append(f"{label(directory)}: patch {patch['path']} does not exist")
    return problems


def kind_of_dir(directory: Path) -> str | None:
    return kustomization(directory)["kind"] if (directory / KUSTOMIZATION).is_file() else None


@pytest.mark.parametrize("directory", kustomization_dirs(), ids=label)
def test_every_kustomization_names_what_exists(directory: Path) -> None:
    assert layout_problems(directory) == []


def test_every_manifest_is_part_of_some_kustomization() -> None:
    referenced = {
        (directory / entry).resolve()
        for directory in kustomization_dirs()
        for entry in kustomization(directory).get("resources", [])
    }

    assert [label(p) for p in manifest_files() if p.resolve() not in referenced] == []


def test_the_default_needs_no_patches_so_the_resolved_stack_is_what_kubectl_applies() -> None:
    # The cross-reference tests below read resolve(KUBE); that holds only without patches.
    for directory in [KUBE, KUBE / "base", KUBE / "components" / "redis-sentinel"]:
        assert "patches" not in kustomization(directory)


@pytest.mark.parametrize("directory", buildable_dirs(), ids=label)
def test_each_kustomization_builds_into_valid_manifests(directory: Path) -> None:
    documents = kustomize_build(directory)

    assert schema_problems(documents) == []
    assert reference_problems(documents) == []


def test_the_external_redis_overlay_has_no_redis_and_points_elsewhere() -> None:
    documents = kustomize_build(KUBE / "overlays" / "external-redis")

    assert not [d for d in documents if "redis" in name_of(d)]
    url = find(documents, "ConfigMap", "berth-cluster")["data"]["BERTH_REDIS_URL"]
    assert "berth-redis" not in url


def test_the_cpu_only_overlay_asks_for_no_gpu() -> None:
    documents = kustomize_build(KUBE / "overlays" / "cpu-only")

    limits = container(find(documents, "Deployment", "berth-modeld"))["resources"]["limits"]
    assert "nvidia.com/gpu" not in limits
    assert "memory" in limits


# ---- cross-references ------------------------------------------------------------------


def name_of(doc: Doc) -> str:
    return doc.get("metadata", {}).get("name", "")


def find(documents: list[Doc], kind: str, name: str | None = None) -> Doc:
    found = [d for d in documents if d["kind"] == kind and name in (None, name_of(d))]
    assert found, f"no {kind} {name or ''}"
    return found[0]


def container(workload: Doc) -> Doc:
    return workload["spec"]["template"]["spec"]["containers"][0]


def workloads(documents: list[Doc]) -> list[Doc]:
    return [d for d in documents if d["kind"] in WORKLOADS]


def all_containers(pod: Doc) -> list[Doc]:
    return [*pod.get("initContainers", []), *pod["containers"]]


def selects(selector: Doc, labels: dict[str, str]) -> bool:
    """A LabelSelector (matchLabels and matchExpressions In/NotIn/Exists) or a Service's
    plain selector against a pod's labels."""
    plain = {k: v for k, v in selector.items() if k not in ("matchLabels", "matchExpressions")}
    wanted = {**plain, **selector.get("matchLabels", {})}
    if any(labels.get(k) != v for k, v in wanted.items()):
        return False
    return all(_expression_holds(e, labels) for e in selector.get("matchExpressions", []))


def _expression_holds(expression: Doc, labels: dict[str, str]) -> bool:
    key, operator = expression["key"], expression["operator"]
    if operator == "In":
        return labels.get(key) in expression["values"]
    if operator == "NotIn":
        return labels.get(key) not in expression["values"]
    return (key in labels) == (operator == "Exists")


def selected_pods(documents: list[Doc], selector: Doc) -> list[Doc]:
    return [
        w["spec"]["template"]
        for w in workloads(documents)
        if selects(selector, w["spec"]["template"]["metadata"].get("labels", {}))
    ]


def container_ports(template: Doc) -> list[Doc]:
    return [p for c in template["spec"]["containers"] for p in c.get("ports", [])]


def service_problems(documents: list[Doc]) -> list[str]:
    problems = []
    for service in (d for d in documents if d["kind"] == "Service"):
        pods = selected_pods(documents, service["spec"]["selector"])
        if not pods:
            problems.append(f"Service {name_of(service)} selects no pod")
        for port in service["spec"]["ports"]:
            target = port.get("targetPort", port["port"])
            key = "name" if isinstance(target, str) else "containerPort"
            if not any(p.get(key) == target for t in pods for p in container_ports(t)):
                problems.append(f"Service {name_of(service)}: no pod has port {target}")
    return problems


def selector_problems(documents: list[Doc]) -> list[str]:
    problems = []
    for doc in documents:
        if doc["kind"] == "PodDisruptionBudget" and not selected_pods(
            documents, doc["spec"]["selector"]
        ):
            problems.append(f"PodDisruptionBudget {name_of(doc)} selects no pod")
        if doc["kind"] == "StatefulSet":
            headless = [
                d
                for d in documents
                if d["kind"] == "Service" and name_of(d) == doc["spec"]["serviceName"]
            ]
            if not headless or headless[0]["spec"].get("clusterIP") != "None":
                problems.append(f"StatefulSet {name_of(doc)}: no headless Service")
    return problems


def policy_problems(documents: list[Doc]) -> list[str]:
    problems = []
    for policy in (d for d in documents if d["kind"] == "NetworkPolicy"):
        selector = policy["spec"]["podSelector"]
        pods = selected_pods(documents, selector)
        if selector and not pods:
            problems.append(f"NetworkPolicy {name_of(policy)} selects no pod")
        for rule in policy["spec"].get("ingress", []):
            problems += _rule_problems(documents, policy, rule, pods)
    return problems


def _rule_problems(documents: list[Doc], policy: Doc, rule: Doc, pods: list[Doc]) -> list[str]:
    problems = []
    for peer in rule.get("from", []):
        # Peers in other namespaces (namespaceSelector) are the users' pods, not ours.
        if (
            "podSelector" in peer
            and "namespaceSelector" not in peer
            and not selected_pods(documents, peer["podSelector"])
        ):
            problems.append(f"NetworkPolicy {name_of(policy)}: a peer selects no pod")
    ours = {p["containerPort"] for t in pods for p in container_ports(t)}
    for port in rule.get("ports", []):
        wanted = set(range(port["port"], port.get("endPort", port["port"]) + 1))
        if pods and not wanted & ours:
            problems.append(f"NetworkPolicy {name_of(policy)}: no selected pod has {port}")
    return problems


def named(documents: list[Doc], kind: str) -> set[str]:
    return {name_of(d) for d in documents if d["kind"] == kind}


def config_keys(documents: list[Doc], kind: str, name: str) -> set[str] | None:
    """The keys of a ConfigMap or Secret we ship or the user creates; None: no such one."""
    if kind == "Secret" and name in USER_SECRETS:
        return USER_SECRETS[name]
    found = [d for d in documents if d["kind"] == kind and name_of(d) == name]
    return {*found[0].get("data", {}), *found[0].get("stringData", {})} if found else None


def pod_problems(documents: list[Doc]) -> list[str]:
    problems = []
    for workload in workloads(documents):
        where = f"{workload['kind']} {name_of(workload)}"
        pod = workload["spec"]["template"]["spec"]
        claims = {t["metadata"]["name"] for t in workload["spec"].get("volumeClaimTemplates", [])}
        account = pod.get("serviceAccountName", "default")
        if account not in named(documents, "ServiceAccount"):
            problems.append(f"{where}: no ServiceAccount {account}")
        problems += [f"{where}: {p}" for p in _volume_problems(documents, pod, claims)]
        for box in all_containers(pod):
            problems += [f"{where}/{box['name']}: {p}" for p in _env_problems(documents, box)]
    return problems


def _volume_problems(documents: list[Doc], pod: Doc, claims: set[str]) -> list[str]:
    problems = []
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    for box in all_containers(pod):
        for mount in box.get("volumeMounts", []):
            if mount["name"] not in volumes and mount["name"] not in claims:
                problems.append(f"mount {mount['mountPath']} names no volume {mount['name']}")
    for volume in volumes.values():
        if "persistentVolumeClaim" in volume:
            claim = volume["persistentVolumeClaim"]["claimName"]
            if claim not in named(documents, "PersistentVolumeClaim"):
                problems.append(f"no PersistentVolumeClaim {claim}")
        for kind, field, key in (
            ("Secret", "secret", "secretName"),
            ("ConfigMap", "configMap", "name"),
        ):
            if field in volume:
                problems += _source_problems(documents, kind, volume[field][key], volume[field])
    return problems


def _source_problems(documents: list[Doc], kind: str, name: str, source: Doc) -> list[str]:
    keys = config_keys(documents, kind, name)
    if keys is None:
        return [f"no {kind} {name}"]
    return [
        f"{kind} {name} has no key {i['key']}"
        for i in source.get("items", [])
        if i["key"] not in keys
    ]


def _env_problems(documents: list[Doc], box: Doc) -> list[str]:
    problems = []
    for variable in box.get("env", []):
        source = variable.get("valueFrom", {})
        for kind, field in (("Secret", "secretKeyRef"), ("ConfigMap", "configMapKeyRef")):
            if field in source and not source[field].get("optional"):
                keys = config_keys(documents, kind, source[field]["name"])
                if keys is None or source[field]["key"] not in keys:
                    problems.append(f"{variable['name']}: no {kind} key {source[field]}")
    return problems


def reference_problems(documents: list[Doc]) -> list[str]:
    return [
        *service_problems(documents),
        *selector_problems(documents),
        *policy_problems(documents),
        *pod_problems(documents),
        *berth_problems(documents),
    ]


# ---- the berth daemons: settings, probes, volumes --------------------------------------


def image_name(box: Doc) -> str:
    return box["image"].rsplit("/", 1)[-1].split(":", 1)[0]


def berth_containers(documents: list[Doc]) -> Iterator[tuple[Doc, Doc]]:
    for workload in workloads(documents):
        for box in workload["spec"]["template"]["spec"]["containers"]:
            if image_name(box) in SETTINGS:
                yield workload, box


def expand(value: str, environment: dict[str, str]) -> str:
    """Kubernetes' $(VAR) expansion of variables defined earlier in the same list."""
    return re.sub(r"\$\((\w+)\)", lambda m: environment.get(m[1], m[0]), value)


def pod_environment(documents: list[Doc], box: Doc) -> dict[str, str]:
    environment: dict[str, str] = {}
    for variable in box.get("env", []):
        source = variable.get("valueFrom", {})
        if "fieldRef" in source:
            value = FIELD_SAMPLES.get(source["fieldRef"]["fieldPath"], "sample")
        elif "configMapKeyRef" in source:
            ref = source["configMapKeyRef"]
            value = find(documents, "ConfigMap", ref["name"])["data"][ref["key"]]
        elif "secretKeyRef" in source:
            value = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="  # base64 of 32 bytes
        else:
            value = expand(str(variable.get("value", "")), environment)
        environment[variable["name"]] = value
    return environment


def projected_files(documents: list[Doc], pod: Doc, box: Doc, root: Path) -> dict[str, Path]:
    """Writes the files of the container's Secret and ConfigMap mounts under `root`, as the
    kubelet would project them; returns mountPath -> where they are here."""
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    mounts: dict[str, Path] = {}
    for mount in box.get("volumeMounts", []):
        volume = volumes.get(mount["name"], {})
        source = volume.get("secret") or volume.get("configMap")
        if source is None:
            continue
        kind, name = (
            ("Secret", source["secretName"])
            if "secret" in volume
            else ("ConfigMap", source["name"])
        )
        paths = [i["path"] for i in source.get("items", [])] or sorted(
            config_keys(documents, kind, name) or ()
        )
        folder = root / mount["name"]
        folder.mkdir(parents=True, exist_ok=True)
        for path in paths:
            (folder / path).write_text("projected\n")
        mounts[mount["mountPath"]] = folder
    return mounts


def daemon_settings(documents: list[Doc], workload: Doc, box: Doc, root: Path) -> DaemonSettings:
    """The daemon's settings as it would build them in that pod: its environment (files
    in mounted Secrets moved under `root`) and its args."""
    pod = workload["spec"]["template"]["spec"]
    mounts = projected_files(documents, pod, box, root)
    environment = pod_environment(documents, box)
    for mount_path, folder in mounts.items():
        environment = {k: v.replace(mount_path + "/", f"{folder}/") for k, v in environment.items()}
    with mock.patch.dict("os.environ", environment, clear=True):
        return SETTINGS[image_name(box)].from_args(box.get("args", []))


def berth_problems(documents: list[Doc]) -> list[str]:
    problems = []
    for workload, box in berth_containers(documents):
        where = f"{workload['kind']} {name_of(workload)}"
        accepted = accepted_env(image_name(box).removeprefix("berth-"))
        for variable in box.get("env", []):
            if variable["name"].startswith("BERTH_") and variable["name"] not in accepted:
                problems.append(f"{where}: {image_name(box)} reads no {variable['name']}")
        problems += [f"{where}: {p}" for p in _startup_problems(documents, workload, box)]
    return problems


def _startup_problems(documents: list[Doc], workload: Doc, box: Doc) -> list[str]:
    with TemporaryDirectory() as root:
        try:
            settings = daemon_settings(documents, workload, box, Path(root))
        except (Exception, SystemExit) as error:
            return [f"the daemon refuses its settings: {error}"]
    return [*_probe_problems(box, settings), *_writable_problems(box, settings)]


def _probe_problems(box: Doc, settings: DaemonSettings) -> list[str]:
    sockets = {a.target for a in settings.addresses if a.is_unix}
    problems = []
    for kind in ("readinessProbe", "livenessProbe"):
        command = box.get(kind, {}).get("exec", {}).get("command", [])
        if command[:1] != ["berth-healthcheck"] or len(command) < 2:
            problems.append(f"{kind} does not run berth-healthcheck")
        elif parse_address(command[1]).target not in sockets:
            problems.append(f"{kind} checks {command[1]}, which the daemon does not listen on")
    return problems


def _writable_problems(box: Doc, settings: DaemonSettings) -> list[str]:
    """With a read-only root, what the daemon writes must be on a mounted volume."""
    if not box.get("securityContext", {}).get("readOnlyRootFilesystem"):
        return []
    mounts = [Path(m["mountPath"]) for m in box.get("volumeMounts", []) if not m.get("readOnly")]
    writes = [settings.state_dir, *(a.socket_path.parent for a in settings.addresses if a.is_unix)]
    writes += [settings.runtime_dir] if isinstance(settings, McpdSettings) else []
    return [
        f"{path} is on the read-only root"
        for path in writes
        if not any(path.is_relative_to(m) for m in mounts)
    ]


@pytest.fixture(scope="module")
def stack() -> list[Doc]:
    """What `kubectl apply -k deploy/kubernetes` creates."""
    return resolve(KUBE)


def test_the_default_stack_has_no_dangling_reference(stack: list[Doc]) -> None:
    assert reference_problems(stack) == []


def test_every_daemon_is_deployed_once(stack: list[Doc]) -> None:
    images = sorted(image_name(box) for _, box in berth_containers(stack))

    assert images == sorted(SETTINGS)


BREAKAGES = {
    "service-selector": (
        lambda s: find(s, "Service", "berth-mcpd")["spec"]["selector"].update(
            {"app.kubernetes.io/component": "mcp"}
        ),
        "Service berth-mcpd selects no pod",
    ),
    "service-port": (
        lambda s: find(s, "Service", "berth-modeld")["spec"]["ports"][0].update(targetPort="rpc"),
        "no pod has port rpc",
    ),
    "policy-peer": (
        lambda s: find(s, "NetworkPolicy", "berth-modeld")["spec"]["ingress"][0]["from"][0][
            "podSelector"
        ]["matchLabels"].update({"app.kubernetes.io/component": "gw"}),
        "a peer selects no pod",
    ),
    "unknown-variable": (
        lambda s: container(find(s, "Deployment", "berth-gateway"))["env"].append(
            {"name": "BERTH_GATEWAY_UPSTREAM_CA", "value": "/x"}
        ),
        "reads no BERTH_GATEWAY_UPSTREAM_CA",
    ),
    "variable-of-another-daemon": (
        lambda s: container(find(s, "Deployment", "berth-mcpd"))["env"].append(
            {"name": "BERTH_MODELD_OPENAI_PORT", "value": "1"}
        ),
        "reads no BERTH_MODELD_OPENAI_PORT",
    ),
    "bad-value": (
        lambda s: container(find(s, "Deployment", "berth-modeld"))["env"].append(
            {"name": "BERTH_MODELD_LOG_FORMAT", "value": "xml"}
        ),
        "refuses its settings",
    ),
    "file-not-in-secret": (
        lambda s: find(s, "Deployment", "berth-gateway")["spec"]["template"]["spec"]["volumes"][-1][
            "secret"
        ]["items"].pop(),
        "refuses its settings",
    ),
    "probe-socket": (
        lambda s: container(find(s, "DaemonSet", "berth-networkd"))["livenessProbe"]["exec"][
            "command"
        ].__setitem__(1, "unix:///run/berth/network.sock"),
        "does not listen on",
    ),
    "secret-name": (
        lambda s: find(s, "Deployment", "berth-mcpd")["spec"]["template"]["spec"]["containers"][0][
            "env"
        ][-2]["valueFrom"]["secretKeyRef"].update(name="berth-mcp-key"),
        "no Secret key",
    ),
    "missing-claim": (
        lambda s: next(d for d in s if name_of(d) == "berth-models")["metadata"].update(
            name="models"
        ),
        "no PersistentVolumeClaim berth-models",
    ),
}


@pytest.mark.parametrize("breakage", list(BREAKAGES), ids=list(BREAKAGES))
def test_a_broken_reference_is_reported(stack: list[Doc], breakage: str) -> None:
    broken = copy.deepcopy(stack)
    change, message = BREAKAGES[breakage]

    change(broken)

    assert any(message in problem for problem in reference_problems(broken)), breakage


# ---- what the issue asks of each daemon ------------------------------------------------


def test_the_agent_runs_on_every_node_in_the_nodes_network(stack: list[Doc]) -> None:
    agent = find(stack, "DaemonSet", "berth-networkd")
    pod = agent["spec"]["template"]["spec"]
    box = container(agent)
    environment = pod_environment(stack, box)

    assert pod["hostNetwork"] is True
    assert pod["dnsPolicy"] == "ClusterFirstWithHostNet"
    assert {"operator": "Exists"} in pod["tolerations"]
    assert set(box["securityContext"]["capabilities"]["add"]) >= NETWORKD_CAPABILITIES
    assert environment["BERTH_NETWORKD_ADVERTISE_ADDRESS"] == "192.0.2.10:50061"
    assert environment["BERTH_NETWORKD_HOST_NAME"] == "node-a"
    netns = [m for m in box["volumeMounts"] if m["mountPath"] == "/run/netns"]
    # Kubernetes refuses Bidirectional propagation outside privileged containers.
    assert netns[0]["mountPropagation"] == "Bidirectional"
    assert box["securityContext"]["privileged"] is True


def test_the_runner_asks_for_a_gpu_and_keeps_models_on_a_claim(stack: list[Doc]) -> None:
    runner = find(stack, "Deployment", "berth-modeld")
    box = container(runner)
    volumes = {v["name"]: v for v in runner["spec"]["template"]["spec"]["volumes"]}
    models = [m for m in box["volumeMounts"] if m["mountPath"] == "/var/lib/berth/models"]

    assert box["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert runner["spec"]["strategy"]["type"] == "Recreate"
    assert "persistentVolumeClaim" in volumes[models[0]["name"]]
    assert "startupProbe" in box


def test_the_gateway_dials_daemons_with_mtls(stack: list[Doc], tmp_path: Path) -> None:
    gateway = find(stack, "Deployment", "berth-gateway")

    settings = daemon_settings(stack, gateway, container(gateway), tmp_path)

    assert isinstance(settings, GatewaySettings)
    assert settings.upstream_tls_ca and settings.upstream_tls_cert and settings.upstream_tls_key
    assert settings.upstream_tls_server_name == "berth-networkd"
    assert settings.models_address == "berth-modeld.berth.svc:50062"
    assert settings.network_address == "192.0.2.10:50061"
    assert (
        settings.redis_url == find(stack, "ConfigMap", "berth-cluster")["data"]["BERTH_REDIS_URL"]
    )


@pytest.mark.parametrize("image", ["berth-networkd", "berth-modeld", "berth-mcpd"])
def test_daemons_take_only_the_gateways_certificate_on_tcp(
    stack: list[Doc], tmp_path: Path, image: str
) -> None:
    workload, box = next((w, b) for w, b in berth_containers(stack) if image_name(b) == image)

    settings = daemon_settings(stack, workload, box, tmp_path)

    assert settings.tls_client_ca is not None
    assert [a for a in settings.addresses if not a.is_unix]


def test_every_container_requests_resources_and_limits_memory(stack: list[Doc]) -> None:
    missing = [
        f"{name_of(w)}/{box['name']}"
        for w in workloads(stack)
        for box in all_containers(w["spec"]["template"]["spec"])
        if not {"cpu", "memory"} <= set(box.get("resources", {}).get("requests", {}))
        or "memory" not in box["resources"].get("limits", {})
    ]

    assert missing == []


def test_only_the_agent_is_privileged_and_everything_else_is_locked_down(stack: list[Doc]) -> None:
    loose = []
    for workload in workloads(stack):
        pod = workload["spec"]["template"]["spec"]
        if name_of(workload) == "berth-networkd":
            continue
        context = pod.get("securityContext", {})
        if not context.get("runAsNonRoot") or context.get("seccompProfile") != {
            "type": "RuntimeDefault"
        }:
            loose.append(name_of(workload))
        if pod.get("automountServiceAccountToken") is not False:
            loose.append(f"{name_of(workload)}: service account token")
        for box in all_containers(pod):
            own = box.get("securityContext", {})
            if (
                own.get("allowPrivilegeEscalation") is not False
                or own.get("capabilities", {}).get("drop") != ["ALL"]
                or not own.get("readOnlyRootFilesystem")
                or own.get("privileged")
            ):
                loose.append(f"{name_of(workload)}/{box['name']}")

    assert loose == []


def test_service_accounts_mount_no_token(stack: list[Doc]) -> None:
    accounts = [d for d in stack if d["kind"] == "ServiceAccount"]

    assert accounts
    assert [
        name_of(a) for a in accounts if a.get("automountServiceAccountToken") is not False
    ] == []


def test_ingress_is_denied_unless_a_policy_admits_it(stack: list[Doc]) -> None:
    deny = [
        d
        for d in stack
        if d["kind"] == "NetworkPolicy"
        and d["spec"]["podSelector"] == {}
        and not d["spec"].get("ingress")
    ]
    gateway = find(stack, "NetworkPolicy", "berth-gateway")["spec"]["ingress"]
    modeld = find(stack, "NetworkPolicy", "berth-modeld")["spec"]["ingress"]

    assert deny and deny[0]["spec"]["policyTypes"] == ["Ingress"]
    assert gateway == [{"ports": [{"port": 50051, "protocol": "TCP"}]}]
    grpc = [rule for rule in modeld if {"port": 50062, "protocol": "TCP"} in rule["ports"]]
    assert [
        peer["podSelector"]["matchLabels"]["app.kubernetes.io/component"]
        for peer in grpc[0]["from"]
    ] == ["gateway"]


def test_redis_is_reached_through_one_endpoint_that_follows_the_master(stack: list[Doc]) -> None:
    url = find(stack, "ConfigMap", "berth-cluster")["data"]["BERTH_REDIS_URL"]
    service = find(stack, "Service", "berth-redis")
    proxy = find(stack, "ConfigMap", "berth-redis-proxy")["data"]["haproxy.cfg"]
    redis = find(stack, "StatefulSet", "berth-redis")

    assert url == "redis://berth-redis.berth.svc:6379/0"
    assert selected_pods(stack, service["spec"]["selector"])[0]["spec"]["containers"][0][
        "image"
    ].startswith("haproxy")
    assert "expect string role:master" in proxy
    for ordinal in range(redis["spec"]["replicas"]):
        assert f"berth-redis-{ordinal}.berth-redis-headless.berth.svc.cluster.local:6379" in proxy
    assert {c["name"] for c in container_list(redis)} == {"redis", "sentinel"}


def container_list(workload: Doc) -> list[Doc]:
    return workload["spec"]["template"]["spec"]["containers"]
