"""The Kubernetes deployment (deploy/kubernetes/), checked offline: no cluster, no kubectl needed.

The kustomization is rendered here in Python (namespace, resources, configMapGenerator: the
only features it may use; a test keeps it that way), then:
- every core object is validated strictly against the Kubernetes API models of the official
  `kubernetes` client (pydantic models: unknown fields, wrong types, missing required fields);
- every Strimzi object against the CRD schemas of Strimzi 1.2.0 (tests/fixtures/strimzi/);
- the cross-references: ConfigMaps, Secrets, volumes, Services, ports, probes, and the huxue
  configuration inside the ConfigMap (it loads, its addresses name the Services, its Kafka
  accounts are the KafkaUsers whose Secrets the pods read, its topics are the KafkaTopics,
  and the KafkaUsers' ACLs are exactly pipeline/stack/kafka_auth.py's table).
Where kubectl is installed, one more test checks that `kubectl kustomize` renders the same.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tomllib
from pathlib import Path, PurePosixPath
from urllib.parse import urlsplit

import pytest
import yaml
from kubernetes.client import models as k8s

from pipeline import cli, credentials, mqtt_auth
from pipeline.config import load_config
from pipeline.registry import load_registry
from pipeline.stack import kafka_auth

REPO = Path(__file__).resolve().parents[2]
KUSTOMIZE_DIR = REPO / "deploy" / "kubernetes"
STRIMZI_SCHEMAS = REPO / "tests" / "fixtures" / "strimzi" / "crd-schemas-1.2.0.json"
NAMESPACE = "huxue"

# Secrets the manifests read but do not contain (passwords stay out of git). Each one is
# listed, with how to make it, in kustomization.yaml's header and the README.
EXTERNAL_SECRETS = {
    "huxue-mosquitto-auth": {"passwd", "acl"},
    "huxue-bridge-mqtt": {"mqtt.json"},
    "huxue-postgres": {"password"},
    "huxue-notifier-secrets": set(),  # optional, envFrom: any keys
}
# huxue component -> (workload kind, container, config file, Kafka role of kafka_client.ACCOUNTS)
COMPONENTS = {
    "bridge": ("Deployment", "huxue-bridge", "bridge.yaml", "bridge"),
    "worker": ("StatefulSet", "huxue-worker", "worker.yaml", "worker"),
    "notifier": ("Deployment", "huxue-notifier", "notifier.yaml", "notifier"),
    "console": ("Deployment", "huxue-console", "console.yaml", "operator"),
}
CORE_MODELS = {
    ("v1", "Namespace"): k8s.V1Namespace,
    ("v1", "Service"): k8s.V1Service,
    ("v1", "ConfigMap"): k8s.V1ConfigMap,
    ("apps/v1", "Deployment"): k8s.V1Deployment,
    ("apps/v1", "StatefulSet"): k8s.V1StatefulSet,
    ("policy/v1", "PodDisruptionBudget"): k8s.V1PodDisruptionBudget,
    ("networking.k8s.io/v1", "NetworkPolicy"): k8s.V1NetworkPolicy,
}
STRIMZI_API = "kafka.strimzi.io/v1"
CLUSTER_SCOPED = {"Namespace"}
WORKLOADS = ("Deployment", "StatefulSet")


# --- rendering ------------------------------------------------------------------------


def kustomization() -> dict:
    return yaml.safe_load((KUSTOMIZE_DIR / "kustomization.yaml").read_text(encoding="utf-8"))


def load_docs(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d is not None]


def render() -> list[dict]:
    """What `kubectl kustomize deploy/kubernetes` renders, without the ConfigMap name hashes."""
    kz = kustomization()
    objects = [doc for res in kz["resources"] for doc in load_docs(KUSTOMIZE_DIR / res)]
    gen_labels = (kz.get("generatorOptions") or {}).get("labels") or {}
    for gen in kz.get("configMapGenerator") or []:
        data = {}
        for entry in gen["files"]:
            key, _, path = entry.rpartition("=")
            data[key or PurePosixPath(path).name] = (KUSTOMIZE_DIR / path).read_text(encoding="utf-8")
        meta = {"name": gen["name"], **({"labels": dict(gen_labels)} if gen_labels else {})}
        objects.append({"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": data})
    for obj in objects:
        if obj["kind"] not in CLUSTER_SCOPED:
            obj["metadata"]["namespace"] = kz["namespace"]
    return objects


@pytest.fixture(scope="module")
def objects() -> list[dict]:
    return render()


def by_kind(objects, kind: str) -> dict[str, dict]:
    return {o["metadata"]["name"]: o for o in objects if o["kind"] == kind}


def one(objects, kind: str, name: str) -> dict:
    found = by_kind(objects, kind)
    assert name in found, f"no {kind} {name}"
    return found[name]


def pod_spec(workload: dict) -> dict:
    return workload["spec"]["template"]["spec"]


def container(workload: dict, name: str | None = None) -> dict:
    containers = pod_spec(workload)["containers"]
    if name is None:
        assert len(containers) == 1, workload["metadata"]["name"]
        return containers[0]
    return next(c for c in containers if c["name"] == name)


def env_of(c: dict) -> dict[str, dict]:
    return {e["name"]: e for e in c.get("env") or []}


def configmap_files(objects, workload: dict, mount_path: str) -> dict[str, str]:
    """The files a ConfigMap (or projected ConfigMaps) volume shows at `mount_path`."""
    c = container(workload)
    (mount,) = [m for m in c["volumeMounts"] if m["mountPath"] == mount_path]
    (volume,) = [v for v in pod_spec(workload)["volumes"] if v["name"] == mount["name"]]
    sources = [s["configMap"] for s in volume["projected"]["sources"]] if "projected" in volume else [volume["configMap"]]
    files: dict[str, str] = {}
    for src in sources:
        cm = one(objects, "ConfigMap", src["name"])
        items = src.get("items")
        data = {i["path"]: cm["data"][i["key"]] for i in items} if items else cm["data"]
        assert not set(files) & set(data), f"{mount_path}: two ConfigMaps give the same file"
        files.update(data)
    return files


def lay_out(objects, workload: dict, mount_path: str, root: Path) -> Path:
    """Write the ConfigMap files as the container sees them under `root`."""
    target = root / PurePosixPath(mount_path).relative_to("/")
    target.mkdir(parents=True, exist_ok=True)
    for name, text in configmap_files(objects, workload, mount_path).items():
        (target / name).write_text(text, encoding="utf-8")
    return target


def component(objects, name: str) -> tuple[dict, dict]:
    kind, workload_name, _, _ = COMPONENTS[name]
    w = one(objects, kind, workload_name)
    return w, container(w)


def config_path_of(c: dict) -> str:
    return c["args"][c["args"].index("--config") + 1]


def load_component_config(objects, name: str, root: Path):
    w, c = component(objects, name)
    path = config_path_of(c)
    lay_out(objects, w, str(PurePosixPath(path).parent), root)
    env = {k: e["value"] for k, e in env_of(c).items() if "value" in e}
    return load_config(root / PurePosixPath(path).relative_to("/"), env=env)


@pytest.fixture(scope="module")
def configs(objects, tmp_path_factory) -> dict:
    return {name: load_component_config(objects, name, tmp_path_factory.mktemp(name)) for name in COMPONENTS}


# --- the kustomization itself ------------------------------------------------------------


def test_kustomization_uses_only_what_this_renderer_understands():
    kz = kustomization()
    assert set(kz) <= {"apiVersion", "kind", "namespace", "resources", "configMapGenerator", "generatorOptions"}
    assert kz["namespace"] == NAMESPACE
    assert set(kz.get("generatorOptions") or {}) <= {"labels"}  # hashes on: changes roll the pods
    for gen in kz["configMapGenerator"]:
        assert set(gen) == {"name", "files"}, gen["name"]
    for res in kz["resources"]:
        assert (KUSTOMIZE_DIR / res).is_file(), f"{res}: not a file (directories and remote bases are not rendered here)"


def test_every_manifest_file_is_used():
    kz = kustomization()
    used = {KUSTOMIZE_DIR / r for r in kz["resources"]}
    used |= {KUSTOMIZE_DIR / f.rpartition("=")[2] for g in kz["configMapGenerator"] for f in g["files"]}
    present = {p for p in KUSTOMIZE_DIR.rglob("*") if p.is_file() and p.name != "kustomization.yaml"}
    assert present - used == set(), "files in deploy/kubernetes that kustomize never reads"


def test_names_are_unique(objects):
    keys = [(o["kind"], o["metadata"]["name"]) for o in objects]
    assert len(keys) == len(set(keys))


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl not installed (the Python rendering above is checked regardless)")
def test_kubectl_kustomize_renders_the_same(objects):
    out = subprocess.run(["kubectl", "kustomize", str(KUSTOMIZE_DIR)], capture_output=True, text=True, timeout=60, check=True).stdout
    theirs = [d for d in yaml.safe_load_all(out) if d]
    generated = {g["name"] for g in kustomization()["configMapGenerator"]}
    text = json.dumps(theirs, sort_keys=True)
    for name in generated:  # name-<10 character hash> -> name
        text = re.sub(rf'"{re.escape(name)}-[a-z0-9]{{10}}"', f'"{name}"', text)
    theirs = json.loads(text)

    def key(o):
        return (o["kind"], o["metadata"]["name"])

    assert sorted(theirs, key=key) == sorted(json.loads(json.dumps(objects)), key=key)


# --- Kubernetes API models ---------------------------------------------------------------


DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
PORT_NAME = re.compile(r"(?=.*[a-z])[a-z0-9]([-a-z0-9]*[a-z0-9])?")


def test_every_object_is_a_known_kind(objects):
    for o in objects:
        key = (o["apiVersion"], o["kind"])
        assert key in CORE_MODELS or o["apiVersion"] == STRIMZI_API, f"{key}: not validated by these tests"


def test_core_objects_validate_strictly_against_the_api_models(objects):
    for o in objects:
        model = CORE_MODELS.get((o["apiVersion"], o["kind"]))
        if model is None:
            continue
        parsed = model.model_validate(o)  # raises on unknown fields, wrong types, missing required
        # The models also accept python_names (api_version): the round trip by alias proves
        # every key was the API's camelCase name.
        assert parsed.model_dump(by_alias=True, exclude_unset=True, mode="json") == json.loads(json.dumps(o)), o["metadata"]["name"]


def test_names_follow_kubernetes_rules(objects):
    for o in objects:
        name = o["metadata"]["name"]
        pattern = DNS_LABEL if o["kind"] in ("Service", "Namespace") else DNS_SUBDOMAIN
        assert pattern.fullmatch(name) and len(name) <= 63, f"{o['kind']} {name!r}"
        if o["kind"] in WORKLOADS:
            spec = pod_spec(o)
            for c in spec["containers"]:
                assert DNS_LABEL.fullmatch(c["name"]), c["name"]
                for p in c.get("ports") or []:
                    assert "name" in p and PORT_NAME.fullmatch(p["name"]) and len(p["name"]) <= 15, p
            for v in spec.get("volumes") or []:
                assert DNS_LABEL.fullmatch(v["name"]), v["name"]


def test_selectors_match_their_pods(objects):
    for o in objects:
        if o["kind"] in WORKLOADS:
            labels = o["spec"]["template"]["metadata"]["labels"]
            assert o["spec"]["selector"]["matchLabels"].items() <= labels.items(), o["metadata"]["name"]
    pods = [w["spec"]["template"]["metadata"]["labels"] for w in objects if w["kind"] in WORKLOADS]
    for svc in by_kind(objects, "Service").values():
        assert any(svc["spec"]["selector"].items() <= p.items() for p in pods), f"Service {svc['metadata']['name']} selects no pod"
    for kind in ("PodDisruptionBudget", "NetworkPolicy"):
        for o in by_kind(objects, kind).values():
            sel = (o["spec"].get("selector") or o["spec"].get("podSelector"))["matchLabels"]
            assert any(sel.items() <= p.items() for p in pods), f"{kind} {o['metadata']['name']} selects no pod"


def test_everything_is_in_the_namespace_and_labelled(objects):
    for o in objects:
        if o["kind"] not in CLUSTER_SCOPED:
            assert o["metadata"]["namespace"] == NAMESPACE
        assert o["metadata"]["labels"]["app.kubernetes.io/part-of"] == "huxue", f"{o['kind']} {o['metadata']['name']}"
    for w in objects:
        if w["kind"] in WORKLOADS:
            assert w["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/part-of"] == "huxue"


# --- Strimzi CRD schemas ----------------------------------------------------------------


def schema_errors(schema: dict, value, path: str = "") -> list[str]:
    """The subset of OpenAPI v3 that Kubernetes structural schemas (and Strimzi's CRDs) use."""
    errors: list[str] = []
    if schema.get("x-kubernetes-int-or-string"):
        if not isinstance(value, (int, str)) or isinstance(value, bool):
            errors.append(f"{path}: expected an integer or a string, got {value!r}")
        return errors
    kind = schema.get("type")
    checks = {
        "object": lambda v: isinstance(v, dict),
        "array": lambda v: isinstance(v, list),
        "string": lambda v: isinstance(v, str),
        "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
        "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
        "boolean": lambda v: isinstance(v, bool),
    }
    if kind and not checks[kind](value):
        return [f"{path}: expected {kind}, got {value!r}"]
    if "enum" in schema and value not in schema["enum"]:
        errors.append(f"{path}: {value!r} is not one of {schema['enum']}")
    if "minimum" in schema and value < schema["minimum"]:
        errors.append(f"{path}: {value} < minimum {schema['minimum']}")
    if "maximum" in schema and value > schema["maximum"]:
        errors.append(f"{path}: {value} > maximum {schema['maximum']}")
    if "pattern" in schema and isinstance(value, str) and not re.search(schema["pattern"], value):
        errors.append(f"{path}: {value!r} does not match {schema['pattern']}")
    if "minItems" in schema and len(value) < schema["minItems"]:
        errors.append(f"{path}: fewer than {schema['minItems']} items")
    if isinstance(value, dict):
        props = schema.get("properties")
        extra = schema.get("additionalProperties")
        for key in schema.get("required", []):
            if key not in value:
                errors.append(f"{path}: missing required {key!r}")
        for key, item in value.items():
            if props and key in props:
                errors += schema_errors(props[key], item, f"{path}.{key}")
            elif isinstance(extra, dict):
                errors += schema_errors(extra, item, f"{path}.{key}")
            elif props is not None and not extra and not schema.get("x-kubernetes-preserve-unknown-fields"):
                errors.append(f"{path}: unknown field {key!r}")
    if isinstance(value, list) and "items" in schema:
        for i, item in enumerate(value):
            errors += schema_errors(schema["items"], item, f"{path}[{i}]")
    for sub in ("oneOf", "anyOf"):
        if sub in schema:
            matching = sum(not schema_errors(s, value, path) for s in schema[sub])
            if (sub == "oneOf" and matching != 1) or (sub == "anyOf" and matching < 1):
                errors.append(f"{path}: {matching} of the {sub} alternatives match")
    return errors


@pytest.fixture(scope="module")
def strimzi_schemas() -> dict:
    return json.loads(STRIMZI_SCHEMAS.read_text(encoding="utf-8"))


def test_the_schema_checker_rejects_what_it_should(strimzi_schemas):
    user = strimzi_schemas[f"{STRIMZI_API}/KafkaUser"]
    good = {"apiVersion": STRIMZI_API, "kind": "KafkaUser", "metadata": {},
            "spec": {"authentication": {"type": "scram-sha-512"},
                     "authorization": {"type": "simple", "acls": [{"resource": {"type": "topic", "name": "t"}, "operations": ["Read"]}]}}}
    assert schema_errors(user, good) == []
    bad = json.loads(json.dumps(good))
    bad["spec"]["authorization"]["acls"][0]["operation"] = "Read"  # v1beta2's singular field: gone in v1
    bad["spec"]["authentication"]["type"] = "scram-sha-256"
    del bad["spec"]["authorization"]["acls"][0]["resource"]["type"]
    errors = "\n".join(schema_errors(user, bad))
    assert "unknown field 'operation'" in errors and "scram-sha-256" in errors and "missing required 'type'" in errors


def test_strimzi_objects_validate_against_the_crd_schemas(objects, strimzi_schemas):
    found = 0
    for o in objects:
        if o["apiVersion"] != STRIMZI_API:
            continue
        found += 1
        schema = strimzi_schemas[f"{o['apiVersion']}/{o['kind']}"]
        assert schema_errors(schema, o) == [], f"{o['kind']} {o['metadata']['name']}"
        k8s.V1ObjectMeta.model_validate(o["metadata"])
    assert found


# --- Kafka (Strimzi) ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def kafka(objects) -> dict:
    (k,) = by_kind(objects, "Kafka").values()
    return k


def test_kafka_is_kraft_with_three_persistent_dual_role_nodes(objects, kafka):
    pools = by_kind(objects, "KafkaNodePool").values()
    assert pools
    for pool in pools:
        assert pool["metadata"]["labels"]["strimzi.io/cluster"] == kafka["metadata"]["name"]
    roles = [r for p in pools for r in p["spec"]["roles"] for _ in range(p["spec"]["replicas"])]
    assert roles.count("controller") == 3 and roles.count("broker") == 3  # a quorum of three; three brokers
    for pool in pools:
        storage = pool["spec"]["storage"]
        volumes = storage["volumes"] if storage["type"] == "jbod" else [storage]
        for v in volumes:
            assert v["type"] == "persistent-claim" and not v.get("deleteClaim"), pool["metadata"]["name"]
        assert pool["spec"]["resources"]["limits"]["memory"]


def test_kafka_listener_and_authorization(kafka, configs):
    listeners = kafka["spec"]["kafka"]["listeners"]
    assert kafka["spec"]["kafka"]["authorization"]["type"] == "simple"
    for lst in listeners:
        assert lst["authentication"]["type"] == "scram-sha-512", f"listener {lst['name']} without authentication"
    # every component points at the Strimzi bootstrap Service of that listener, with SCRAM
    for name, cfg in configs.items():
        host, _, port = cfg.kafka.bootstrap.partition(":")
        assert host == f"{kafka['metadata']['name']}-kafka-bootstrap", name
        (lst,) = [lst for lst in listeners if lst["port"] == int(port)]
        assert lst["type"] == "internal"
        assert cfg.kafka.security_protocol == ("SASL_SSL" if lst["tls"] else "SASL_PLAINTEXT"), name
        assert cfg.kafka.sasl_mechanism == "SCRAM-SHA-512", name


def test_kafka_durability_settings(kafka, configs):
    conf = kafka["spec"]["kafka"]["config"]
    assert conf["auto.create.topics.enable"] is False
    assert conf["default.replication.factor"] == conf["offsets.topic.replication.factor"] == conf["transaction.state.log.replication.factor"] == 3
    assert conf["min.insync.replicas"] == conf["transaction.state.log.min.isr"] == 2
    assert {"topicOperator", "userOperator"} <= set(kafka["spec"]["entityOperator"])
    assert re.fullmatch(r"4\.\d+\.\d+", kafka["spec"]["kafka"]["version"])
    for cfg in configs.values():
        assert cfg.kafka.replication_factor == 3


def test_kafka_topics_are_huxues_with_its_partitioning(objects, kafka, configs):
    from pipeline.worker.app import TICK_RETENTION_MS

    cfg = configs["worker"]
    t = cfg.topics
    topics = {o["spec"].get("topicName", o["metadata"]["name"]): o for o in by_kind(objects, "KafkaTopic").values()}
    assert set(topics) == {*t.deployment(), t.ticks, *t.changelogs}
    for name, topic in topics.items():
        assert topic["metadata"]["labels"]["strimzi.io/cluster"] == kafka["metadata"]["name"]
        # kafka_client.ensure_topics refuses topics with another partition count
        assert topic["spec"]["partitions"] == cfg.kafka.partitions, name
        assert topic["spec"]["replicas"] == cfg.kafka.replication_factor, name
        assert topic["spec"]["config"]["min.insync.replicas"] == 2, name
    # what the worker would create them with (worker/app.py run)
    assert str(topics[t.ticks]["spec"]["config"]["retention.ms"]) == TICK_RETENTION_MS
    for name in t.changelogs:
        assert topics[name]["spec"]["config"]["cleanup.policy"] == "compact"
    # what every component creates them with (kafka_client.ensure_topics): the units topic compacted
    for name, wanted in t.configs().items():
        assert {k: str(v) for k, v in topics[name]["spec"]["config"].items() if k in wanted} == wanted, name
    assert t.configs()[t.units]["cleanup.policy"] == "compact"


def acls_of_manifests(objects) -> dict[str, set[tuple[str, str, str]]]:
    out = {}
    for name, user in by_kind(objects, "KafkaUser").items():
        rows = set()
        for acl in user["spec"]["authorization"]["acls"]:
            res = acl["resource"]
            assert acl.get("type", "allow") == "allow" and acl.get("host", "*") == "*"
            assert res["type"] == "cluster" or res.get("patternType", "literal") == "literal", res
            resource = kafka_auth.CLUSTER if res["type"] == "cluster" else res["name"]
            rows |= {(res["type"], resource, op) for op in acl["operations"]}
        out[user["spec"].get("userName", name)] = rows
    return out


def test_kafka_user_acls_equal_kafka_auths_table(objects, configs):
    cfg = configs["worker"]
    table = {user: {(kind, name, op) for kind, name, ops in rows for op in ops} for user, rows in kafka_auth.acl_table(cfg).items()}
    assert acls_of_manifests(objects) == table
    for user in by_kind(objects, "KafkaUser").values():
        assert user["spec"]["authentication"]["type"] == "scram-sha-512"
        assert user["spec"]["authorization"]["type"] == "simple"


def test_acl_table_is_the_same_for_every_component_config(configs):
    # the table depends on the prefix, app_id and group_id: all four files must agree on them
    tables = [kafka_auth.acl_table(cfg) for cfg in configs.values()]
    assert all(t == tables[0] for t in tables)


# --- huxue configuration -------------------------------------------------------------------


def raw_configs() -> dict[str, dict]:
    return {name: yaml.safe_load((KUSTOMIZE_DIR / "config" / COMPONENTS[name][2]).read_text(encoding="utf-8")) for name in COMPONENTS}


def test_component_configs_differ_only_in_the_kafka_account():
    raws = raw_configs()
    for raw in raws.values():
        raw["kafka"].pop("username")
    first = next(iter(raws.values()))
    for name, raw in raws.items():
        assert raw == first, f"config/{COMPONENTS[name][2]} differs from the others in more than kafka.username"


def test_each_component_uses_its_own_kafka_user_and_its_secret(objects, configs):
    from pipeline import kafka_client

    users = by_kind(objects, "KafkaUser")
    for name, cfg in configs.items():
        _, c = component(objects, name)
        account = kafka_client.ACCOUNTS[COMPONENTS[name][3]]
        assert cfg.kafka.username == account, name
        assert account in users, f"{name}: no KafkaUser {account}"
        assert cfg.kafka.password_env, name
        ref = env_of(c)[cfg.kafka.password_env]["valueFrom"]["secretKeyRef"]
        # the Secret Strimzi's User Operator writes for that KafkaUser
        assert (ref["name"], ref["key"]) == (account, "password"), name


def test_configs_and_registry_load_as_mounted(objects, configs):
    for name, cfg in configs.items():
        assert cfg.registry_path.name in ("registry.yaml", "registry.json")
        registry = load_registry(cfg.registry_path)
        assert registry.schools and registry.devices and registry.units, name
        assert cfg.mqtt.auth and not cfg.mqtt.tool_accounts, f"{name}: production has no tool accounts"


def test_huxue_commands_parse_with_the_real_cli(objects):
    for name in COMPONENTS:
        w, c = component(objects, name)
        assert "command" not in c, f"{name}: keep the image's ENTRYPOINT (huxue)"
        args = cli.parser().parse_args(c["args"])
        assert args.verb == name
        assert PurePosixPath(args.config).name in configmap_files(objects, w, str(PurePosixPath(args.config).parent))


# --- workloads: images, security, resources ------------------------------------------------


def image_ref(ref: str) -> tuple[str, str | None]:
    name, _, _ = ref.partition("@")
    last = name.rsplit("/", 1)[-1]
    return tuple(name.rsplit(":", 1)) if ":" in last else (name, None)


def workloads(objects) -> list[dict]:
    return [o for o in objects if o["kind"] in WORKLOADS]


def test_images_are_pinned_and_huxue_follows_pyproject(objects):
    version = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    for w in workloads(objects):
        for c in pod_spec(w)["containers"]:
            repo, tag = image_ref(c["image"])
            assert tag and tag != "latest" and re.fullmatch(r"\d+\.\d+(\.\d+)?([.-].*)?", tag), c["image"]
            if repo.rsplit("/", 1)[-1] == "huxue":
                assert tag == version, f"{w['metadata']['name']}: image tag must follow pyproject ({version})"
    for name in COMPONENTS:
        assert image_ref(component(objects, name)[1]["image"])[0] == "huxue"


def test_mosquitto_image_is_the_one_compose_runs(objects):
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text(encoding="utf-8"))
    c = container(one(objects, "StatefulSet", "huxue-mosquitto"))
    assert c["image"] == compose["services"]["mosquitto"]["image"]


def dockerfile_uid() -> int:
    text = (REPO / "Dockerfile").read_text(encoding="utf-8")
    return int(re.search(r"useradd\b.*?--uid\s+(\d+)", text).group(1))


def test_pods_meet_the_restricted_pod_security_standard(objects):
    for w in workloads(objects):
        spec, name = pod_spec(w), w["metadata"]["name"]
        psc = spec["securityContext"]
        assert psc["runAsNonRoot"] is True and psc["runAsUser"] > 0, name
        assert psc["seccompProfile"]["type"] == "RuntimeDefault", name
        assert spec.get("automountServiceAccountToken") is False, f"{name}: needs no API access"
        for c in spec["containers"]:
            sc = c["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False, name
            assert sc["capabilities"]["drop"] == ["ALL"] and not sc["capabilities"].get("add"), name
            assert sc["readOnlyRootFilesystem"] is True, name


def test_huxue_pods_run_as_the_images_user(objects):
    uid = dockerfile_uid()
    for name in COMPONENTS:
        psc = pod_spec(component(objects, name)[0])["securityContext"]
        assert psc["runAsUser"] == psc["runAsGroup"] == psc["fsGroup"] == uid, name


def test_every_container_has_requests_and_a_memory_limit(objects):
    for w in workloads(objects):
        for c in pod_spec(w)["containers"]:
            res = c["resources"]
            assert {"cpu", "memory"} <= set(res["requests"]), w["metadata"]["name"]
            assert "memory" in res["limits"], w["metadata"]["name"]


def test_writable_paths_are_volumes(objects, configs):
    """Read-only root filesystems: HUXUE_HOME and /tmp of huxue's pods are volumes."""
    for name, cfg in configs.items():
        w, c = component(objects, name)
        mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
        home = env_of(c)["HUXUE_HOME"]["value"]
        assert home in mounts and not mounts[home].get("readOnly"), name
        assert "/tmp" in mounts, name
        assert cfg.home == Path(home).resolve()
        if name == "worker":
            assert cfg.worker_datadir.is_relative_to(cfg.home)


# --- cross-references ------------------------------------------------------------------


def referenced(spec: dict) -> dict[str, set[tuple[str, str | None]]]:
    """ConfigMaps, Secrets and PVCs a pod spec reads: kind -> {(name, key or None)}."""
    refs: dict[str, set] = {"ConfigMap": set(), "Secret": set(), "PersistentVolumeClaim": set()}
    for v in spec.get("volumes") or []:
        if "configMap" in v:
            refs["ConfigMap"] |= {(v["configMap"]["name"], i["key"]) for i in v["configMap"].get("items") or [{"key": None}]}
        if "secret" in v:
            refs["Secret"] |= {(v["secret"]["secretName"], i["key"]) for i in v["secret"].get("items") or [{"key": None}]}
        if "persistentVolumeClaim" in v:
            refs["PersistentVolumeClaim"].add((v["persistentVolumeClaim"]["claimName"], None))
        for src in (v.get("projected") or {}).get("sources") or []:
            for kind, field in (("ConfigMap", "configMap"), ("Secret", "secret")):
                if field in src:
                    refs[kind] |= {(src[field]["name"], i["key"]) for i in src[field].get("items") or [{"key": None}]}
    for c in spec["containers"] + (spec.get("initContainers") or []):
        for e in c.get("env") or []:
            frm = e.get("valueFrom") or {}
            if "secretKeyRef" in frm:
                refs["Secret"].add((frm["secretKeyRef"]["name"], frm["secretKeyRef"]["key"]))
            if "configMapKeyRef" in frm:
                refs["ConfigMap"].add((frm["configMapKeyRef"]["name"], frm["configMapKeyRef"]["key"]))
        for e in c.get("envFrom") or []:
            if "secretRef" in e:
                refs["Secret"].add((e["secretRef"]["name"], None))
            if "configMapRef" in e:
                refs["ConfigMap"].add((e["configMapRef"]["name"], None))
    return refs


def test_configmaps_secrets_and_claims_exist_or_are_documented(objects):
    configmaps = by_kind(objects, "ConfigMap")
    strimzi_user_secrets = set(by_kind(objects, "KafkaUser"))  # the User Operator writes them
    header = (KUSTOMIZE_DIR / "kustomization.yaml").read_text(encoding="utf-8")
    for w in workloads(objects):
        refs = referenced(pod_spec(w))
        for name, key in refs["ConfigMap"]:
            assert name in configmaps, f"{w['metadata']['name']}: ConfigMap {name}"
            assert key is None or key in configmaps[name]["data"], f"ConfigMap {name} has no {key}"
        for name, key in refs["Secret"]:
            if name in strimzi_user_secrets:
                assert key == "password", f"Strimzi's user Secret {name} has `password`, not {key}"
                continue
            assert name in EXTERNAL_SECRETS, f"{w['metadata']['name']}: Secret {name} is neither generated nor documented"
            assert key is None or key in EXTERNAL_SECRETS[name], f"Secret {name}: key {key} not documented"
        claims = {t["metadata"]["name"] for t in w["spec"].get("volumeClaimTemplates") or []}
        for name, _ in refs["PersistentVolumeClaim"]:
            assert name in claims, name
    for name in EXTERNAL_SECRETS:
        assert re.search(rf"#\s+{re.escape(name)}\s", header), f"kustomization.yaml does not document Secret {name}"


def test_volume_mounts_match_volumes(objects):
    for w in workloads(objects):
        spec = pod_spec(w)
        volumes = {v["name"] for v in spec.get("volumes") or []}
        volumes |= {t["metadata"]["name"] for t in w["spec"].get("volumeClaimTemplates") or []}
        mounted = {m["name"] for c in spec["containers"] for m in c.get("volumeMounts") or []}
        assert mounted <= volumes, f"{w['metadata']['name']}: mounts without a volume {mounted - volumes}"
        assert volumes <= mounted, f"{w['metadata']['name']}: volumes never mounted {volumes - mounted}"


def container_port(w: dict, port) -> int:
    """A Service's or probe's port (name or number) -> the container port number."""
    ports = [p for c in pod_spec(w)["containers"] for p in c.get("ports") or []]
    if isinstance(port, str):
        (p,) = [p for p in ports if p.get("name") == port]
        return p["containerPort"]
    assert port in {p["containerPort"] for p in ports}, port
    return port


def test_services_reach_declared_container_ports(objects):
    pods = workloads(objects)
    for svc in by_kind(objects, "Service").values():
        (w,) = [w for w in pods if svc["spec"]["selector"].items() <= w["spec"]["template"]["metadata"]["labels"].items()]
        for p in svc["spec"]["ports"]:
            container_port(w, p.get("targetPort", p["port"]))


def test_statefulsets_are_governed_by_headless_services(objects):
    services = by_kind(objects, "Service")
    for sts in by_kind(objects, "StatefulSet").values():
        svc = services[sts["spec"]["serviceName"]]
        assert svc["spec"].get("clusterIP") == "None", sts["metadata"]["name"]


def test_metrics_probes_use_the_configured_metrics_ports_on_the_pod_ip(objects, configs):
    # the kubelet (and Prometheus) reach /metrics over the pod IP: it must not be bound to loopback
    served = {"bridge": configs["bridge"].bridge, "worker": configs["worker"].worker, "notifier": configs["notifier"].notify}
    for name, section in served.items():
        w, c = component(objects, name)
        assert section.metrics_port, f"{name}: metrics are off, nothing to probe"
        assert section.metrics_bind == "0.0.0.0", f"{name}: metrics_bind {section.metrics_bind}: the kubelet cannot reach it"
        assert container_port(w, "metrics") == section.metrics_port, name
        for kind in ("startupProbe", "readinessProbe", "livenessProbe"):
            assert c[kind]["httpGet"] == {"path": "/metrics", "port": "metrics"}, f"{name} {kind}"


def test_console_probes_hit_its_health_route(objects, configs):
    w, c = component(objects, "console")
    cfg = configs["console"]
    assert cfg.console.bind == "0.0.0.0", "the kubelet and the Service reach the pod IP"
    source = (REPO / "pipeline" / "ops" / "console.py").read_text(encoding="utf-8")
    for kind in ("readinessProbe", "livenessProbe"):
        probe = c[kind]["httpGet"]
        assert container_port(w, probe["port"]) == cfg.console.port
        assert f'add_get("{probe["path"]}"' in source, f"console has no route {probe['path']}"
        assert f'"{probe["path"]}"' in source.split("public = request.path in", 1)[1].split("\n", 1)[0], "probe path needs a login"


def test_grace_periods_cover_the_stop_timeout(objects, configs):
    for name, cfg in configs.items():
        w, _ = component(objects, name)
        assert pod_spec(w)["terminationGracePeriodSeconds"] >= cfg.stack.stop_timeout_seconds, name


# --- identities: bridge, worker, notifier ---------------------------------------------------


def test_single_identity_components_never_run_twice(objects, configs):
    bridge, _ = component(objects, "bridge")
    notifier, _ = component(objects, "notifier")
    for w in (bridge, notifier):
        assert w["spec"]["replicas"] == 1 and w["spec"]["strategy"]["type"] == "Recreate", w["metadata"]["name"]
    # fixed ids, not <prefix>-<hostname>: a Deployment's hostnames change with every pod
    assert configs["bridge"].bridge.client_id
    assert configs["notifier"].notify.instance_id


def test_worker_is_a_statefulset_with_hostname_based_static_membership(objects, configs):
    w, _ = component(objects, "worker")
    assert w["kind"] == "StatefulSet"
    assert configs["worker"].worker.instance_id == "", "the id must come from the stable pod hostname"
    assert 1 <= w["spec"]["replicas"] <= configs["worker"].kafka.partitions
    assert one(objects, "PodDisruptionBudget", "huxue-worker")["spec"]["maxUnavailable"] == 1


# --- MQTT (Mosquitto) ------------------------------------------------------------------


@pytest.fixture(scope="module")
def mosquitto(objects) -> dict:
    return one(objects, "StatefulSet", "huxue-mosquitto")


def mosquitto_directives(objects, mosquitto) -> dict[str, list[str]]:
    c = container(mosquitto)
    (conf_dir,) = [m["mountPath"] for m in c["volumeMounts"] if m["mountPath"] == "/mosquitto/config"]
    text = configmap_files(objects, mosquitto, conf_dir)["mosquitto.conf"]
    lines = [line.split() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    for d in lines:
        assert "#" not in d[1:], f"trailing comment in {' '.join(d)!r}"
    return {d[0]: d[1:] for d in lines if d[0] != "log_type"}


def test_mosquitto_is_locked_down_and_persistent(objects, mosquitto):
    d = mosquitto_directives(objects, mosquitto)
    assert d["persistence"] == ["true"] and d["allow_anonymous"] == ["false"] and d["use_username_as_clientid"] == ["true"]
    mounts = {m["mountPath"].rstrip("/"): m["name"] for m in container(mosquitto)["volumeMounts"]}
    claims = {t["metadata"]["name"] for t in mosquitto["spec"]["volumeClaimTemplates"]}
    assert mounts[d["persistence_location"][0].rstrip("/")] in claims, "persistence must be on the volume"
    assert [int(p) for p in d["listener"]] == [container_port(mosquitto, "mqtt")]


def test_mosquitto_reads_what_devices_sync_writes(objects, mosquitto, configs, tmp_path):
    """The documented procedure: `huxue devices sync` with the cluster's config makes
    passwd, acl and secrets/mqtt.json; they become the two Secrets the pods mount."""
    d = mosquitto_directives(objects, mosquitto)
    spec = pod_spec(mosquitto)
    mounts = {m["name"]: m["mountPath"] for m in container(mosquitto)["volumeMounts"]}
    (auth,) = [v for v in spec["volumes"] if "secret" in v]
    assert auth["secret"]["secretName"] == "huxue-mosquitto-auth"
    cfg = load_config(configs["bridge"].base_dir + "/bridge.yaml", env={"HUXUE_HOME": str(tmp_path)})
    sync = mqtt_auth.sync(cfg, load_registry(cfg.registry_path))
    passwd, acl = mqtt_auth.files(cfg)
    assert passwd.is_file() and acl.is_file()
    assert d["password_file"] == [f"{mounts[auth['name']]}/{passwd.name}"]
    assert d["acl_file"] == [f"{mounts[auth['name']]}/{acl.name}"]
    assert {passwd.name, acl.name} == EXTERNAL_SECRETS["huxue-mosquitto-auth"]
    # the bridge's Secret: its two accounts of mqtt.json, where it looks for them
    bridge, c = component(objects, "bridge")
    store = credentials.Store(cfg.home, "mqtt")
    names = set(mqtt_auth.bridge_accounts(configs["bridge"]))
    assert names <= set(store.load()) and names <= {a.name for a in sync.accounts}
    (vol,) = [v for v in pod_spec(bridge)["volumes"] if v.get("secret", {}).get("secretName") == "huxue-bridge-mqtt"]
    (mount,) = [m for m in c["volumeMounts"] if m["name"] == vol["name"]]
    (item,) = vol["secret"]["items"]
    in_pod = PurePosixPath(mount["mountPath"]) / item["path"]
    assert in_pod == PurePosixPath(configs["bridge"].home) / store.path.relative_to(cfg.home)
    assert mount.get("readOnly") is True


def test_the_bridge_reaches_mosquitto_through_its_service(objects, mosquitto, configs):
    svc = one(objects, "Service", "huxue-mosquitto")
    url = urlsplit(configs["bridge"].mqtt.url)
    assert url.scheme == "mqtt" and url.hostname == svc["metadata"]["name"]
    (port,) = [p for p in svc["spec"]["ports"] if p["port"] == (url.port or 1883)]
    assert container_port(mosquitto, port["targetPort"]) in [int(p) for p in mosquitto_directives(objects, mosquitto)["listener"]]


# --- PostgreSQL --------------------------------------------------------------------------


def test_console_store_is_the_postgres_statefulset(objects, configs):
    store = urlsplit(configs["console"].console.store)
    assert store.scheme == "postgresql" and store.password is None, "the password comes from PGPASSWORD"
    pg = one(objects, "StatefulSet", "huxue-postgres")
    svc = one(objects, "Service", pg["spec"]["serviceName"])
    assert store.hostname == svc["metadata"]["name"]
    assert container_port(pg, svc["spec"]["ports"][0]["targetPort"]) == (store.port or 5432)
    pg_env = env_of(container(pg))
    assert pg_env["POSTGRES_USER"]["value"] == store.username
    assert pg_env["POSTGRES_DB"]["value"] == store.path.lstrip("/")
    _, console = component(objects, "console")
    # the same Secret sets the database's password and gives it to the console
    assert env_of(console)["PGPASSWORD"]["valueFrom"] == pg_env["POSTGRES_PASSWORD"]["valueFrom"]
    pgdata = pg_env["PGDATA"]["value"]
    (data,) = [m for m in container(pg)["volumeMounts"] if m["name"] == "data"]
    assert PurePosixPath(pgdata).is_relative_to(data["mountPath"]) and pgdata != data["mountPath"]


def test_only_the_console_reaches_postgres(objects):
    policy = one(objects, "NetworkPolicy", "huxue-postgres")
    console, _ = component(objects, "console")
    (rule,) = policy["spec"]["ingress"]
    (peer,) = rule["from"]
    assert peer["podSelector"]["matchLabels"].items() <= console["spec"]["template"]["metadata"]["labels"].items()
    assert [p["port"] for p in rule["ports"]] == [5432]
