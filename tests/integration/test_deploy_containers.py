"""deploy/docker, deploy/kubernetes and deploy/siem: the files parse and keep the least-privilege
shape (capabilities exactly drop ALL + add NET_RAW, host network for capture, non-root, the firmware
scanner without any network or capability). No container runtime or cluster is needed."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from tests.conftest import REPO

DOCKER = REPO / "deploy" / "docker"
K8S = REPO / "deploy" / "kubernetes"


def k8s_docs() -> dict[str, dict[str, Any]]:
    docs: dict[str, dict[str, Any]] = {}
    for path in sorted(K8S.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            assert doc["apiVersion"] and doc["kind"] and doc["metadata"]["name"], path
            docs[doc["kind"]] = doc
    return docs


def test_dockerfile_is_non_root_with_net_raw_file_capability() -> None:
    text = (DOCKER / "Dockerfile").read_text()
    instructions = [
        line.split(None, 1) for line in text.splitlines() if line and not line.startswith((" ", "#"))
    ]
    users = [args for op, *args in instructions if op == "USER"]
    assert users and users[-1] == ["10025:10025"], "last USER must be the non-root camwatch uid"
    assert re.search(r"setcap cap_net_raw\+ep ", text), "capture interpreter needs cap_net_raw"
    assert "cap_net_admin" not in text.lower() and "cap_sys_admin" not in text.lower()
    assert "venv --copies" in text, "the capability must sit on a private interpreter copy"
    assert any(op == "ENTRYPOINT" for op, *_ in instructions)


def test_compose_services() -> None:
    compose = yaml.safe_load((DOCKER / "compose.yaml").read_text())
    services = compose["services"]
    assert {"agent", "prometheus", "grafana", "firmware-scan"} <= set(services)
    agent = services["agent"]
    assert agent["network_mode"] == "host"
    assert agent["cap_drop"] == ["ALL"] and agent["cap_add"] == ["NET_RAW"]
    assert agent["user"].split(":")[0] not in ("0", "root")
    assert "privileged" not in agent
    fw = services["firmware-scan"]
    assert fw["network_mode"] == "none"
    assert fw["cap_drop"] == ["ALL"] and "cap_add" not in fw
    assert "no-new-privileges:true" in fw["security_opt"]
    assert fw["read_only"] is True
    assert all(m.endswith(":ro") for m in fw["volumes"] if m.startswith("./firmware"))
    for name in ("prometheus", "grafana"):
        assert services[name]["cap_drop"] == ["ALL"] and "cap_add" not in services[name]
    mounts = " ".join(services["grafana"]["volumes"])
    assert "../grafana/provisioning/datasources" in mounts and "../grafana/dashboards" in mounts
    assert "../prometheus/camwatch.rules.yml" in " ".join(services["prometheus"]["volumes"])
    for service in services.values():
        for mount in service.get("volumes", []):
            src = mount.split(":")[0]
            if src.startswith("."):
                assert (DOCKER / src).exists() or src in ("./firmware", "./reports"), mount


def test_kubernetes_namespace_allows_host_network() -> None:
    ns = k8s_docs()["Namespace"]
    assert ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "privileged"


def test_kubernetes_daemonset_least_privilege() -> None:
    docs = k8s_docs()
    ds = docs["DaemonSet"]
    pod = ds["spec"]["template"]["spec"]
    assert ds["metadata"]["namespace"] == docs["Namespace"]["metadata"]["name"]
    assert pod["hostNetwork"] is True and pod["dnsPolicy"] == "ClusterFirstWithHostNet"
    assert pod["nodeSelector"] == {"camwatch.io/span": "true"}
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] != 0
    assert pod["automountServiceAccountToken"] is False
    assert "hostPID" not in pod and "hostIPC" not in pod
    (container,) = pod["containers"]
    sc = container["securityContext"]
    assert sc["capabilities"] == {"drop": ["ALL"], "add": ["NET_RAW"]}
    assert sc["runAsNonRoot"] is True and sc.get("privileged") is False
    assert sc["readOnlyRootFilesystem"] is True
    assert container["ports"][0]["containerPort"] == 10025
    assert (
        ds["spec"]["selector"]["matchLabels"].items() <= ds["spec"]["template"]["metadata"]["labels"].items()
    )
    cm_names = {v["configMap"]["name"] for v in pod["volumes"] if "configMap" in v}
    assert cm_names == {docs["ConfigMap"]["metadata"]["name"]}
    assert "camwatch.yaml" in docs["ConfigMap"]["data"]
    yaml.safe_load(docs["ConfigMap"]["data"]["camwatch.yaml"])


def test_kubernetes_service_and_servicemonitor_match_the_pods() -> None:
    docs = k8s_docs()
    pod_labels = docs["DaemonSet"]["spec"]["template"]["metadata"]["labels"]
    svc = docs["Service"]
    assert svc["spec"]["selector"].items() <= pod_labels.items()
    assert svc["spec"]["ports"][0]["targetPort"] == "metrics"
    sm = docs["ServiceMonitor"]
    assert sm["apiVersion"] == "monitoring.coreos.com/v1"
    assert sm["spec"]["selector"]["matchLabels"].items() <= svc["metadata"]["labels"].items()
    assert sm["spec"]["endpoints"][0]["port"] == svc["spec"]["ports"][0]["name"]
    targets = {r["targetLabel"] for r in sm["spec"]["endpoints"][0]["relabelings"]}
    assert {"site", "vlan", "instance"} <= targets


def test_kubernetes_firmware_job_has_no_privileges() -> None:
    job = k8s_docs()["Job"]["spec"]["template"]["spec"]
    assert not job.get("hostNetwork")
    (container,) = job["containers"]
    sc = container["securityContext"]
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert sc["allowPrivilegeEscalation"] is False
    assert job["securityContext"]["runAsNonRoot"] is True


def test_siem_examples_parse() -> None:
    fb = yaml.safe_load((REPO / "deploy" / "siem" / "filebeat.yml").read_text())
    assert fb["filebeat.inputs"][0]["paths"][0].startswith("/var/log/camwatch/events.ndjson")
    vec = yaml.safe_load((REPO / "deploy" / "siem" / "vector.yaml").read_text())
    assert vec["sources"]["camwatch_events"]["include"] == ["/var/log/camwatch/events.ndjson"]
    for sink in vec["sinks"].values():
        assert set(sink["inputs"]) <= set(vec["transforms"]) | set(vec["sources"])


def test_event_paths_agree() -> None:
    """Agent images/units write events where the SIEM shippers read them."""
    path = "/var/log/camwatch/events.ndjson"
    assert path in (REPO / "deploy" / "systemd" / "camwatch.service").read_text()
    assert path in (DOCKER / "Dockerfile").read_text()
    assert path in (K8S / "daemonset.yaml").read_text()
    assert Path(path).name == "events.ndjson"
