"""Kubernetes manifests: committed renders current, schema-valid, and shaped as the agent needs."""

from __future__ import annotations

import os
import re

import kubernetes_validate
import pytest
import yaml
from cloudcoil.models.prometheus_operator import v1 as monitoring_v1

from common import (
    ALLOWED_CAPS,
    CONFIG_PATH,
    K8S,
    METRICS_PORT,
    OVERLAY_PROFILES,
    OVERLAYS,
    PLACEHOLDER,
    PROFILE_NETWORKS,
    RENDERED,
    RENDERS,
    REPO,
    documents,
    kustomize,
    rendered_text,
    workspace_version,
)

# Oldest and newest Kubernetes schemas shipped by kubernetes-validate.
K8S_VERSIONS = ["1.25.0", "1.37.0"]
CRD_MODELS = {"PodMonitor": monitoring_v1.PodMonitor, "PrometheusRule": monitoring_v1.PrometheusRule}


def by_kind(docs: list[dict], kind: str) -> list[dict]:
    return [d for d in docs if d["kind"] == kind]


def one(docs: list[dict], kind: str) -> dict:
    found = by_kind(docs, kind)
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


@pytest.fixture(scope="module")
def legacy_renders(tmp_path_factory) -> dict[str, list[dict]]:
    """Each overlay with components/legacy-kernel added, as a user would enable it."""
    out = {}
    for name in OVERLAYS:
        root = tmp_path_factory.mktemp(f"legacy-{name}")
        (root / "kustomization.yaml").write_text(
            yaml.safe_dump(
                {
                    "apiVersion": "kustomize.config.k8s.io/v1beta1",
                    "kind": "Kustomization",
                    # kustomize takes relative paths only.
                    "resources": [os.path.relpath(K8S / "overlays" / name, root)],
                    "components": [os.path.relpath(K8S / "components" / "legacy-kernel", root)],
                }
            )
        )
        out[name] = documents(kustomize(root))
    return out


@pytest.mark.parametrize("name", RENDERS)
def test_committed_render_is_current(name):
    committed = RENDERED / f"{name}.yaml"
    assert committed.exists(), f"{committed} missing: run bash deploy/check.sh --update"
    assert committed.read_text() == rendered_text(name), (
        f"{committed.relative_to(REPO)} is stale: run bash deploy/check.sh --update and commit"
    )


def validate_all(docs: list[dict], version: str) -> list[str]:
    """Schema errors of every object: built-in kinds against the Kubernetes schema (strict:
    unknown fields are errors), the prometheus-operator kinds against their CRD models."""
    errors = []
    for doc in docs:
        what = f"{doc['kind']}/{doc['metadata']['name']}"
        if doc["kind"] in CRD_MODELS:
            errors += [f"{what}: {e}" for e in crd_errors(doc)]
            continue
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as e:
            errors.append(f"{what}: {'.'.join(map(str, e.path))}: {e.message}")
        except kubernetes_validate.SchemaNotFoundError as e:
            errors.append(f"{what}: no schema: {e.message}")
    return errors


def crd_errors(doc: dict) -> list[str]:
    """Validates against the model generated from the CRD's openAPI schema (types, enums,
    patterns, required fields). The CRD schema lets unknown fields through (the API server prunes
    them silently), so a field the model drops on a round trip is reported as unknown."""
    model = CRD_MODELS[doc["kind"]]
    try:
        parsed = model.model_validate(doc)
    except Exception as e:  # pydantic.ValidationError, with every failing path
        return [str(e)]
    back = parsed.model_dump(by_alias=True, exclude_unset=True, mode="json")
    return [f"{path}: unknown field" for path in dropped(doc, back)]


def dropped(orig, back, path="") -> list[str]:
    if isinstance(orig, dict) and isinstance(back, dict):
        out = []
        for key, value in orig.items():
            sub = f"{path}.{key}" if path else key
            out += [sub] if key not in back else dropped(value, back[key], sub)
        return out
    if isinstance(orig, list) and isinstance(back, list) and len(orig) == len(back):
        return [p for i, (a, b) in enumerate(zip(orig, back)) for p in dropped(a, b, f"{path}[{i}]")]
    return []


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize("name", RENDERS)
def test_schema_valid(renders, name, version):
    assert renders[name], f"{name} rendered nothing"
    assert validate_all(renders[name], version) == []


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_legacy_kernel_component_schema_valid(legacy_renders, version):
    for name, docs in legacy_renders.items():
        assert validate_all(docs, version) == [], name


def test_validation_catches_mistakes(renders):
    """The validators above are not vacuous: a misspelt field and a bad value are reported."""
    ds = yaml.safe_load(yaml.safe_dump(one(renders["eks"], "DaemonSet")))
    ds["spec"]["template"]["spec"]["hostNetwrok"] = True
    assert any("hostNetwrok" in e for e in validate_all([ds], "1.37.0"))
    role = yaml.safe_load(yaml.safe_dump(one(renders["eks"], "ClusterRole")))
    role["rules"][0]["verbz"] = ["get"]
    assert any("verbz" in e for e in validate_all([role], "1.37.0"))
    crd = yaml.safe_load(yaml.safe_dump(one(renders["eks"], "CustomResourceDefinition")))
    crd["spec"]["scope"] = 7
    assert validate_all([crd], "1.37.0")
    monitor = yaml.safe_load(yaml.safe_dump(one(renders["monitoring"], "PodMonitor")))
    monitor["spec"]["podMetricsEndpoints"][0]["intervall"] = "30s"
    assert crd_errors(monitor) == ["spec.podMetricsEndpoints[0].intervall: unknown field"]
    monitor["spec"]["podMetricsEndpoints"][0]["interval"] = "30 seconds"
    assert any("interval" in e for e in crd_errors(monitor))


def container(ds: dict) -> dict:
    containers = ds["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]


@pytest.mark.parametrize("name", OVERLAYS)
def test_daemonset_runs_the_agent_on_every_node(renders, name):
    spec = one(renders[name], "DaemonSet")["spec"]
    pod = spec["template"]["spec"]
    assert pod["hostNetwork"] is True
    assert pod["priorityClassName"] == "system-node-critical"
    assert {"operator": "Exists"} in pod["tolerations"], "must tolerate every taint"
    # The token reaches the API for discovered networks and the node's status object.
    assert pod["automountServiceAccountToken"] is True
    rolling = spec["updateStrategy"]["rollingUpdate"]
    assert spec["updateStrategy"]["type"] == "RollingUpdate"
    assert (rolling["maxUnavailable"], rolling["maxSurge"]) == (1, 0)
    res = container(one(renders[name], "DaemonSet"))["resources"]
    assert set(res["requests"]) == set(res["limits"]) == {"cpu", "memory"}


@pytest.mark.parametrize("name", OVERLAYS)
def test_daemonset_matches_the_agent_contract(renders, name):
    ds = one(renders[name], "DaemonSet")
    c = container(ds)
    assert c["image"].endswith(f":{workspace_version()}"), "image tag follows the workspace version"
    assert c["args"][0] == "run"
    assert f"--config={CONFIG_PATH}" in c["args"]
    assert f"--metrics-addr=0.0.0.0:{METRICS_PORT}" in c["args"]
    env = {e["name"]: e["valueFrom"]["fieldRef"]["fieldPath"] for e in c["env"]}
    assert env == {"NODE_NAME": "spec.nodeName", "HOST_IP": "status.hostIP"}
    port = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert port == {"metrics": METRICS_PORT}
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    notes = ds["spec"]["template"]["metadata"]["annotations"]
    assert notes["prometheus.io/scrape"] == "true"
    assert notes["prometheus.io/port"] == str(METRICS_PORT)
    assert notes["prometheus.io/path"] == "/metrics"


@pytest.mark.parametrize("name", OVERLAYS)
def test_daemonset_privileges_are_minimal(renders, name, legacy_renders):
    for docs, extra in ((renders[name], set()), (legacy_renders[name], {"SYS_ADMIN", "SYS_RESOURCE"})):
        sc = container(one(docs, "DaemonSet"))["securityContext"]
        assert sc["privileged"] is False
        assert sc["capabilities"]["drop"] == ["ALL"]
        assert set(sc["capabilities"]["add"]) == {"NET_ADMIN", "BPF", "PERFMON"} | extra
        assert set(sc["capabilities"]["add"]) <= ALLOWED_CAPS
        assert sc["readOnlyRootFilesystem"] is True
        # Kubernetes rejects allowPrivilegeEscalation=false together with CAP_SYS_ADMIN.
        assert sc["allowPrivilegeEscalation"] is ("SYS_ADMIN" in extra)


@pytest.mark.parametrize("name", OVERLAYS)
def test_daemonset_volumes(renders, name):
    ds = one(renders[name], "DaemonSet")
    pod = ds["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["name"]: m for m in container(ds)["volumeMounts"]}
    assert set(volumes) == set(mounts)
    # The config as a directory (no subPath), so the kubelet's `..data` swap reaches the agent.
    assert mounts["config"] == {"name": "config", "mountPath": "/etc/nodewall", "readOnly": True}
    cm_name = volumes["config"]["configMap"]["name"]
    cms = {cm["metadata"]["name"]: cm for cm in by_kind(renders[name], "ConfigMap")}
    assert cm_name in cms, f"the DaemonSet mounts ConfigMap {cm_name}, which is not rendered"
    assert list(cms[cm_name]["data"]) == ["config.yaml"]
    assert volumes["bpffs"]["hostPath"] == {"path": "/sys/fs/bpf", "type": "Directory"}
    assert mounts["bpffs"]["mountPath"] == "/sys/fs/bpf"
    # The node lock, and the agent socket `kubectl exec ... nodewall drops` reads.
    assert volumes["run"]["hostPath"]["path"] == mounts["run"]["mountPath"] == "/run/nodewall"
    assert all("subPath" not in m for m in mounts.values())


@pytest.mark.parametrize("name", OVERLAYS)
def test_overlay_sets_profile_and_networks_to_fill(renders, name):
    cm = one(renders[name], "ConfigMap")
    config = yaml.safe_load(cm["data"]["config.yaml"])
    profile = OVERLAY_PROFILES[name]
    assert config["profile"] == profile
    assert set(config["networks"]) == PROFILE_NETWORKS[profile]
    for net, entries in config["networks"].items():
        discovered = [e for e in entries if isinstance(e, dict)]
        literal = [e for e in entries if not isinstance(e, dict)]
        assert entries and (discovered or literal), f"networks.{net} is empty"
        assert all(PLACEHOLDER.fullmatch(c) for c in literal), (
            f"networks.{net}: literal entries must be FILL-ME placeholders, the rest discovered"
        )
    kustomization = (K8S / "overlays" / name / "kustomization.yaml").read_text()
    for net in config["networks"]:
        assert re.search(rf"^#\s+networks\.{re.escape(net)}\s+\S", kustomization, re.M), (
            f"overlays/{name}/kustomization.yaml must say what to fill in networks.{net}"
        )
    assert "FILL-ME" in kustomization, "the image registry placeholder must be marked"


def test_tke_node_and_master_can_share_a_cluster(renders):
    node, master = renders["tke-node"], renders["tke-master"]
    keys = lambda docs: {(d["kind"], d["metadata"].get("namespace"), d["metadata"]["name"]): d for d in docs}
    shared = keys(node).keys() & keys(master).keys()
    crd = ("CustomResourceDefinition", None, "nodewallnodestatuses.nodewall.io")
    assert shared == {("Namespace", None, "nodewall"), crd}, f"objects both overlays would overwrite: {shared}"
    for key in shared:
        assert keys(node)[key] == keys(master)[key], f"{key} differs between the overlays"
    sel_node = one(node, "DaemonSet")["spec"]["selector"]["matchLabels"]
    sel_master = one(master, "DaemonSet")["spec"]["selector"]["matchLabels"]
    assert sel_node != sel_master
    terms = lambda docs: one(docs, "DaemonSet")["spec"]["template"]["spec"]["affinity"]["nodeAffinity"][
        "requiredDuringSchedulingIgnoredDuringExecution"
    ]["nodeSelectorTerms"]
    # Workers: neither control-plane label; masters: either one. Disjoint by construction.
    assert [e["operator"] for e in terms(node)[0]["matchExpressions"]] == ["DoesNotExist", "DoesNotExist"]
    assert [t["matchExpressions"][0]["operator"] for t in terms(master)] == ["Exists", "Exists"]
    labels = {e["key"] for e in terms(node)[0]["matchExpressions"]}
    assert labels == {t["matchExpressions"][0]["key"] for t in terms(master)}


def test_podmonitor_scrapes_every_overlay(renders):
    monitor = one(renders["monitoring"], "PodMonitor")
    assert monitor["metadata"]["namespace"] == "nodewall"
    selector = monitor["spec"]["selector"]["matchLabels"]
    endpoint = monitor["spec"]["podMetricsEndpoints"][0]
    for name in OVERLAYS:
        ds = one(renders[name], "DaemonSet")
        assert ds["metadata"]["namespace"] == monitor["metadata"]["namespace"]
        pod_labels = ds["spec"]["template"]["metadata"]["labels"]
        assert selector.items() <= pod_labels.items(), f"PodMonitor does not select {name}'s pods"
        assert endpoint["port"] in {p["name"] for p in container(ds)["ports"]}
        assert pod_labels[monitor["spec"]["jobLabel"]] == "nodewall", "alerts expect job=nodewall"
    targets = {r["targetLabel"] for r in endpoint["relabelings"]}
    assert {"node", "daemonset"} <= targets


def test_monitoring_objects(renders):
    kinds = sorted(d["kind"] for d in renders["monitoring"])
    assert kinds == ["ConfigMap", "PodMonitor", "PrometheusRule"]
    dashboard = one(renders["monitoring"], "ConfigMap")
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert list(dashboard["data"]) == ["nodewall.json"]


@pytest.mark.parametrize("name", OVERLAYS)
def test_rbac_is_minimal(renders, name):
    """The agent reads Nodes and EndpointSlices and writes its NodewallNodeStatus: nothing else."""
    docs = renders[name]
    role = one(docs, "ClusterRole")
    rules = {(tuple(r["apiGroups"]), tuple(r["resources"])): set(r["verbs"]) for r in role["rules"]}
    assert rules == {
        (("",), ("nodes",)): {"get", "list", "watch"},
        (("discovery.k8s.io",), ("endpointslices",)): {"get", "list", "watch"},
        (("nodewall.io",), ("nodewallnodestatuses",)): {"create", "get", "patch", "update"},
    }
    binding = one(docs, "ClusterRoleBinding")
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role["metadata"]["name"]}
    ds = one(docs, "DaemonSet")
    sa = one(docs, "ServiceAccount")
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": sa["metadata"]["name"], "namespace": sa["metadata"]["namespace"]}]
    assert ds["spec"]["template"]["spec"]["serviceAccountName"] == sa["metadata"]["name"]


def test_status_crd(renders):
    """Cluster-scoped, one version, printer columns that point at fields its schema has."""
    crd = one(renders["tke-node"], "CustomResourceDefinition")
    spec = crd["spec"]
    assert crd["metadata"]["name"] == f"{spec['names']['plural']}.{spec['group']}"
    assert (spec["group"], spec["scope"], spec["names"]["kind"]) == ("nodewall.io", "Cluster", "NodewallNodeStatus")
    (version,) = spec["versions"]
    assert version["served"] and version["storage"] and "subresources" not in version
    status = version["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"]
    columns = {c["name"]: c["jsonPath"] for c in version["additionalPrinterColumns"]}
    assert {"Backend", "Mode", "Generation", "Digest", "Result", "Last Apply", "Drops"} <= set(columns)
    for name, path in columns.items():
        field = path.removeprefix(".status.")
        assert field in status, f"printer column {name}: {path} is not in the schema"
