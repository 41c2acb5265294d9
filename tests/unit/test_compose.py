"""The Docker path (docker-compose.yml, Dockerfile, deploy/docker/*), checked without Docker.

There is no Docker engine where these run, so they check what can go wrong in the files
themselves: unpinned images, listeners that do not match between Kafka, Mosquitto and the
huxue services, missing health gates, bind mounts of files that do not exist, and a
configuration or registry that would not load inside the container.
"""

from __future__ import annotations

import copy
import re
import shlex
import shutil
import tomllib
from pathlib import Path, PurePosixPath
from urllib.parse import urlsplit

import pytest
import yaml

from pipeline import cli
from pipeline.config import load_config
from pipeline.registry import load_registry

REPO = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO / "docker-compose.yml"
DOCKERFILE = REPO / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"
MOSQUITTO_CONF = REPO / "deploy" / "docker" / "mosquitto.conf"
HUXUE_SERVICES = ("bridge", "worker", "notifier")
CONFIG_IN_CONTAINER = "/etc/huxue/huxue.yaml"


# --- helpers -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def services(compose) -> dict:
    return compose["services"]


def env_of(service: dict) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):  # ["KEY=value", ...]
        env = dict(item.split("=", 1) for item in env)
    return {k: str(v) for k, v in env.items()}


def parse_listeners(value: str) -> dict[str, tuple[str, int]]:
    """`NAME://host:port,...` -> {NAME: (host, port)}."""
    out = {}
    for item in value.split(","):
        name, _, address = item.strip().partition("://")
        host, _, port = address.rpartition(":")
        out[name] = (host, int(port))
    return out


def image_ref(ref: str) -> tuple[str, str | None, str | None]:
    """`[registry[:port]/]repo[:tag][@digest]` -> (repo, tag, digest)."""
    name, _, digest = ref.partition("@")
    last = name.rsplit("/", 1)[-1]
    if ":" in last:
        repo, tag = name.rsplit(":", 1)
        return repo, tag, digest or None
    return name, None, digest or None


def published(service: dict) -> list[tuple[str, int, int]]:
    """Short or long `ports:` syntax -> [(host_ip, host_port, container_port)]."""
    out = []
    for entry in service.get("ports") or []:
        if isinstance(entry, dict):
            out.append((entry.get("host_ip", ""), int(entry["published"]), int(entry["target"])))
            continue
        spec = str(entry).split("/")[0]
        parts = spec.rsplit(":", 2)
        if len(parts) == 3:
            out.append((parts[0], int(parts[1]), int(parts[2])))
        elif len(parts) == 2:
            out.append(("", int(parts[0]), int(parts[1])))
        else:
            pytest.fail(f"port {entry!r} is not published on a fixed host port")
    return out


def mounts(service: dict) -> list[tuple[str, str, bool]]:
    """Short or long `volumes:` syntax -> [(source, target, read_only)]."""
    out = []
    for entry in service.get("volumes") or []:
        if isinstance(entry, dict):
            out.append((entry["source"], entry["target"], bool(entry.get("read_only"))))
            continue
        source, target, *opts = entry.split(":")
        out.append((source, target, "ro" in (opts[0].split(",") if opts else [])))
    return out


def bind_mounts(service: dict) -> dict[str, Path]:
    """Container path -> host path, for bind mounts (sources that are paths)."""
    return {t: (REPO / s).resolve() for s, t, _ in mounts(service) if s.startswith((".", "/"))}


def seconds(duration: str | int) -> float:
    total, units = 0.0, {"h": 3600, "m": 60, "s": 1, "ms": 0.001, "us": 1e-6}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|us|h|m|s)", str(duration))
    assert parts and "".join(a + b for a, b in parts) == str(duration), f"bad duration {duration!r}"
    for amount, unit in parts:
        total += float(amount) * units[unit]
    return total


def mosquitto_directives() -> list[list[str]]:
    lines = MOSQUITTO_CONF.read_text(encoding="utf-8").splitlines()
    return [line.split() for line in lines if line.strip() and not line.lstrip().startswith("#")]


def mosquitto_listener_ports() -> list[int]:
    return [int(d[1]) for d in mosquitto_directives() if d[0] == "listener"]


def kafka_listeners(services) -> tuple[dict, dict]:
    env = env_of(services["kafka"])
    return parse_listeners(env["KAFKA_LISTENERS"]), parse_listeners(env["KAFKA_ADVERTISED_LISTENERS"])


def container_tree(service: dict, root: Path) -> Path:
    """Lay the service's bind mounts out under `root` as the container would see them."""
    for target, source in bind_mounts(service).items():
        dest = root / PurePosixPath(target).relative_to("/")
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, dest)
    return root / PurePosixPath(CONFIG_IN_CONTAINER).relative_to("/")


# --- services and images -------------------------------------------------------------


def test_the_four_services_exist(services):
    assert {"kafka", "mosquitto", "bridge", "worker"} <= set(services)


def test_every_image_is_pinned(services):
    for name, svc in services.items():
        assert "image" in svc, f"{name}: no image (a build without a pinned image tag)"
        repo, tag, digest = image_ref(svc["image"])
        assert tag or digest, f"{name}: image {svc['image']!r} has no tag"
        if tag:
            assert tag != "latest", f"{name}: image {svc['image']!r} uses latest"
            assert re.fullmatch(r"\d+\.\d+\.\d+([.-].*)?", tag), f"{name}: {tag!r} is a floating tag, pin a full version"


def test_broker_images_are_the_versions_the_notes_require(services):
    assert image_ref(services["kafka"]["image"])[:2] == ("apache/kafka", "4.1.2")
    # 2.0 line: `latest`/`2` are 2.1.x with different per_listener_settings semantics.
    assert image_ref(services["mosquitto"]["image"])[:2] == ("eclipse-mosquitto", "2.0.22")


def test_huxue_services_build_this_repo_and_tag_it_with_the_package_version(services):
    version = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    for name in HUXUE_SERVICES:
        svc = services[name]
        build = svc.get("build")
        context = build if isinstance(build, str) else (build or {}).get("context")
        assert context and (REPO / context).resolve() == REPO, f"{name}: must build the repository root"
        assert image_ref(svc["image"])[:2] == ("huxue", version), f"{name}: image tag must follow pyproject ({version})"


def test_huxue_commands_parse_with_the_real_cli(services):
    for name in HUXUE_SERVICES:
        command = services[name]["command"]
        argv = shlex.split(command) if isinstance(command, str) else [str(a) for a in command]
        args = cli.parser().parse_args(argv)  # --config is a top-level option: before the verb
        assert args.verb == name
        assert args.config == CONFIG_IN_CONTAINER
        assert CONFIG_IN_CONTAINER in bind_mounts(services[name]), f"{name}: {CONFIG_IN_CONTAINER} is not mounted"


def test_restart_policy(services):
    for name in ("kafka", "mosquitto", *HUXUE_SERVICES):
        assert services[name].get("restart") == "unless-stopped", name


# --- Kafka ---------------------------------------------------------------------------


def test_kafka_is_a_single_kraft_combined_node(services):
    env = env_of(services["kafka"])
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    node_id = env["KAFKA_NODE_ID"]
    listeners, advertised = kafka_listeners(services)
    controller = env["KAFKA_CONTROLLER_LISTENER_NAMES"]
    assert controller in listeners and controller not in advertised
    # static quorum of this one node, on its controller port, by its service name
    assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"] == f"{node_id}@kafka:{listeners[controller][1]}"
    assert "KAFKA_CONTROLLER_QUORUM_BOOTSTRAP_SERVERS" not in env  # never with voters
    if "CLUSTER_ID" in env:
        assert re.fullmatch(r"[A-Za-z0-9_-]{22}", env["CLUSTER_ID"])


def test_kafka_has_internal_and_external_listeners(services):
    env = env_of(services["kafka"])
    listeners, advertised = kafka_listeners(services)
    assert {"INTERNAL", "EXTERNAL", "CONTROLLER"} == set(listeners)
    assert {"INTERNAL", "EXTERNAL"} == set(advertised)
    for name in advertised:
        assert advertised[name][1] == listeners[name][1], f"{name}: advertised port differs from the bound one"
    assert advertised["INTERNAL"] == ("kafka", 29092)
    assert advertised["EXTERNAL"][0] in ("localhost", "127.0.0.1")
    protocol_map = dict(item.split(":") for item in env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(","))
    assert set(listeners) <= set(protocol_map)
    assert env["KAFKA_INTER_BROKER_LISTENER_NAME"] == "INTERNAL"


def test_kafka_external_listener_is_published_on_the_advertised_port(services):
    listeners, advertised = kafka_listeners(services)
    ports = {(host, cont) for _, host, cont in published(services["kafka"])}
    assert (9092, listeners["EXTERNAL"][1]) in ports
    assert advertised["EXTERNAL"][1] == 9092
    exposed = {cont for _, _, cont in published(services["kafka"])}
    assert listeners["CONTROLLER"][1] not in exposed and listeners["INTERNAL"][1] not in exposed


def test_kafka_settings_for_one_node(services):
    env = env_of(services["kafka"])
    assert env["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"
    for key in (
        "KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR",
        "KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR",
        "KAFKA_TRANSACTION_STATE_LOG_MIN_ISR",
    ):
        assert env[key] == "1", key
    assert env["KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS"] == "0"
    assert "-Xmx512m" in env["KAFKA_HEAP_OPTS"].split()


def test_kafka_data_lives_on_a_named_volume(compose, services):
    env = env_of(services["kafka"])
    vols = {target: source for source, target, _ in mounts(services["kafka"])}
    assert env["KAFKA_LOG_DIRS"] in vols
    assert vols[env["KAFKA_LOG_DIRS"]] in (compose.get("volumes") or {})


def test_kafka_healthcheck_probes_a_broker_listener_not_too_often(services):
    listeners, _ = kafka_listeners(services)
    hc = services["kafka"]["healthcheck"]
    test = " ".join(hc["test"]) if isinstance(hc["test"], list) else hc["test"]
    assert "kafka-broker-api-versions.sh" in test
    m = re.search(r"--bootstrap-server\s+(\S+):(\d+)", test)
    assert m and int(m.group(2)) in {listeners["INTERNAL"][1], listeners["EXTERNAL"][1]}
    assert int(m.group(2)) != listeners["CONTROLLER"][1]
    assert seconds(hc["interval"]) >= 10  # each probe starts a JVM


# --- Mosquitto -----------------------------------------------------------------------


def test_mosquitto_conf_is_mounted_and_sane(services):
    binds = bind_mounts(services["mosquitto"])
    assert binds.get("/mosquitto/config/mosquitto.conf") == MOSQUITTO_CONF
    directives = {d[0]: d[1:] for d in mosquitto_directives()}
    assert directives["persistence"] == ["true"]
    assert directives["allow_anonymous"] == ["false"]
    assert directives["use_username_as_clientid"] == ["true"]
    assert mosquitto_listener_ports() == [1883]
    # persistence goes to the data volume
    vols = {target: source for source, target, _ in mounts(services["mosquitto"])}
    assert directives["persistence_location"][0].rstrip("/") in vols
    text = MOSQUITTO_CONF.read_text(encoding="utf-8").lower()
    assert "production" in text and "tls" in text


def test_mosquitto_reads_the_accounts_the_accounts_service_generates(services, tmp_path):
    """The password file and ACL paths in mosquitto.conf are where `huxue devices sync` writes
    them in the shared volume, and that service runs (successfully) before Mosquitto."""
    from pipeline import mqtt_auth

    directives = {d[0]: d[1:] for d in mosquitto_directives()}
    acc = services["accounts"]
    home = PurePosixPath(env_of(acc)["HUXUE_HOME"])
    volume_at = {target: source for source, target, _ in mounts(acc)}[str(home)]
    in_mosquitto = {source: PurePosixPath(target) for source, target, _ in mounts(services["mosquitto"])}[volume_at]
    cfg = load_config(REPO / "deploy" / "docker" / "huxue.yaml", env={})
    passwd, acl = mqtt_auth.files(cfg)
    assert directives["password_file"] == [str(in_mosquitto / passwd.relative_to(cfg.home))]
    assert directives["acl_file"] == [str(in_mosquitto / acl.relative_to(cfg.home))]
    assert services["mosquitto"]["depends_on"]["accounts"]["condition"] == "service_completed_successfully"
    script = acc["entrypoint"][-1]
    assert "devices sync" in script and cli.parser().parse_args(["--config", CONFIG_IN_CONTAINER, "devices", "sync"])
    # the bridge reads its password from the same volume, as HUXUE_HOME
    bridge = services["bridge"]
    assert {target: source for source, target, _ in mounts(bridge)}[env_of(bridge)["HUXUE_HOME"]] == volume_at


def test_mosquitto_conf_has_no_trailing_comments():
    # mosquitto would read `x true  # note` as the value "true  # note"
    for d in mosquitto_directives():
        assert "#" not in d[1:], f"trailing comment in {' '.join(d)!r}"


def test_mosquitto_healthcheck_expects_the_refusal_of_an_anonymous_client(services):
    hc = services["mosquitto"]["healthcheck"]
    assert hc["test"][0] == "CMD-SHELL"
    words = shlex.split(hc["test"][1])
    assert "mosquitto_pub" in words and "not authorised" in words  # the client's message for CONNACK 5
    port = int(words[words.index("-p") + 1])
    assert port in mosquitto_listener_ports()
    assert (1883, 1883) in {(h, c) for _, h, c in published(services["mosquitto"])}


# --- bridge and worker ---------------------------------------------------------------


def test_huxue_services_point_at_the_internal_listeners(services):
    _, advertised = kafka_listeners(services)
    internal = "{}:{}".format(*advertised["INTERNAL"])
    for name in HUXUE_SERVICES:
        env = env_of(services[name])
        assert env["HUXUE_KAFKA_BOOTSTRAP"] == internal == "kafka:29092", name
        url = urlsplit(env["HUXUE_MQTT_URL"])
        assert (url.scheme, url.hostname) == ("mqtt", "mosquitto"), name
        assert url.port in mosquitto_listener_ports(), name


def test_huxue_services_wait_for_healthy_brokers(services):
    needs = {"bridge": {"kafka", "mosquitto"}, "worker": {"kafka"}, "notifier": {"kafka"}}
    for name in HUXUE_SERVICES:
        deps = services[name]["depends_on"]
        assert isinstance(deps, dict), f"{name}: depends_on needs conditions (long syntax)"
        assert needs[name] <= set(deps), name
        for dep, spec in deps.items():
            assert "healthcheck" in services[dep], f"{name} waits on {dep}, which has no healthcheck"
            assert spec.get("condition") == "service_healthy", f"{name} -> {dep}"


def test_worker_state_lives_on_a_named_volume(compose, services):
    env = env_of(services["worker"])
    vols = {target: source for source, target, _ in mounts(services["worker"])}
    assert env["HUXUE_HOME"] in vols
    assert vols[env["HUXUE_HOME"]] in (compose.get("volumes") or {})


def test_bind_mounted_files_exist_and_are_read_only(services):
    for name, svc in services.items():
        for source, target, read_only in mounts(svc):
            if source.startswith((".", "/")):
                assert (REPO / source).is_file(), f"{name}: {source} does not exist in the repository"
                assert read_only, f"{name}: {source} -> {target} should be mounted :ro"


def test_registry_is_mounted_where_the_config_expects_it(services):
    raw = yaml.safe_load((REPO / "deploy" / "docker" / "huxue.yaml").read_text(encoding="utf-8"))
    expected = str(PurePosixPath(CONFIG_IN_CONTAINER).parent / raw["registry"])
    for name in HUXUE_SERVICES:
        assert bind_mounts(services[name]).get(expected) == REPO / "pipeline" / "data" / "registry.yaml", name


@pytest.mark.parametrize("name", HUXUE_SERVICES)
def test_config_and_registry_load_as_mounted(services, tmp_path, name):
    svc = services[name]
    config = container_tree(svc, tmp_path)
    cfg = load_config(config, env={})
    # The file alone already points at the compose services ...
    assert cfg.mqtt.url == env_of(svc)["HUXUE_MQTT_URL"]
    assert cfg.kafka.bootstrap == env_of(svc)["HUXUE_KAFKA_BOOTSTRAP"]
    assert cfg.bridge.client_id == "huxue-bridge-compose"
    assert cfg.registry_path == (tmp_path / "etc" / "huxue" / "registry.yaml").resolve()
    registry = load_registry(cfg.registry_path)
    assert registry.schools
    # ... and the service environment does not change the outcome.
    env = {k: v for k, v in env_of(svc).items() if k.startswith("HUXUE_")}
    with_env = load_config(config, env=env)
    assert (with_env.mqtt.url, with_env.kafka.bootstrap) == (cfg.mqtt.url, cfg.kafka.bootstrap)
    if name == "worker":
        assert with_env.worker_datadir.is_relative_to(Path(env["HUXUE_HOME"]).resolve())


def test_compose_config_keeps_the_sample_keys():
    sample = yaml.safe_load((REPO / "pipeline" / "data" / "huxue.yaml").read_text(encoding="utf-8"))
    ours = yaml.safe_load((REPO / "deploy" / "docker" / "huxue.yaml").read_text(encoding="utf-8"))
    for key, value in sample.items():
        assert key in ours, key
        if isinstance(value, dict):
            assert set(value) <= set(ours[key]), key
    assert ours["kafka"]["partitions"] == sample["kafka"]["partitions"]
    assert ours["escalation"] == sample["escalation"]


# --- Dockerfile ----------------------------------------------------------------------


def dockerfile_instructions() -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text(encoding="utf-8"))
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            op, _, rest = line.partition(" ")
            out.append((op.upper(), rest.strip()))
    return out


def test_dockerfile_base_image_is_pinned():
    froms = [rest.split()[0] for op, rest in dockerfile_instructions() if op == "FROM"]
    assert froms, "no FROM"
    for ref in froms:
        repo, tag, digest = image_ref(ref)
        assert repo == "python"
        assert tag and re.fullmatch(r"3\.11\.\d+-slim-bookworm", tag), f"base image {ref!r} is not a pinned 3.11 slim-bookworm"


def test_dockerfile_installs_huxue_and_runs_it_unprivileged():
    ins = dockerfile_instructions()
    entrypoints = [rest for op, rest in ins if op == "ENTRYPOINT"]
    assert entrypoints and yaml.safe_load(entrypoints[-1]) == ["huxue"]  # exec form: signals reach huxue
    assert any(op == "RUN" and "pip install --no-cache-dir ." in rest for op, rest in ins)
    users = [rest for op, rest in ins if op == "USER"]
    assert users and users[-1] not in ("root", "0")
    # the user is set after the install, so the package is not writable at run time
    last_run = max(i for i, (op, _) in enumerate(ins) if op == "RUN")
    assert max(i for i, (op, _) in enumerate(ins) if op == "USER") > last_run


def test_dockerfile_copies_exist_and_are_not_ignored():
    ignored = {line.strip() for line in DOCKERIGNORE.read_text(encoding="utf-8").splitlines()}
    for must in (".venv", ".git", ".huxue", "**/__pycache__"):
        assert must in ignored, f".dockerignore misses {must}"
    for op, rest in dockerfile_instructions():
        if op != "COPY" or rest.startswith("--from"):
            continue
        for src in rest.split()[:-1]:
            if any(c in src for c in "*?["):
                continue  # optional files
            assert (REPO / src).exists(), f"COPY {src}: not in the repository"
            assert src.rstrip("/") not in ignored, f"COPY {src}: excluded by .dockerignore"


# --- the 3-broker cluster (deploy/docker/cluster.yml over docker-compose.yml) -------

CLUSTER_FILE = REPO / "deploy" / "docker" / "cluster.yml"
CLUSTER_CONFIG = REPO / "deploy" / "docker" / "huxue-cluster.yaml"
KAFKA_NODES = ("kafka", "kafka-2", "kafka-3")
HUXUE_IMAGE_SERVICES = ("accounts", *HUXUE_SERVICES, "console")  # every service that runs huxue


def merge_service(base: dict, override: dict) -> dict:
    """One service of `docker compose -f base -f override`, by the Compose merge rules
    (compose-spec merge.md): mappings key by key, environment and depends_on in their long
    form, volumes unique by container path, ports by (ip, published, target), command,
    entrypoint and healthcheck.test replaced, other sequences appended."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        if key == "environment":
            out[key] = {**env_of(base), **env_of(override)}
        elif key == "depends_on":
            out[key] = {**depends_on(base), **depends_on(override)}
        elif key == "volumes":
            by_target = {mounts({"volumes": [e]})[0][1]: e for e in base.get(key) or []}
            by_target.update({mounts({"volumes": [e]})[0][1]: e for e in value})
            out[key] = list(by_target.values())
        elif key == "ports":
            entries = list(base.get(key) or [])
            seen = {published({"ports": [e]})[0] for e in entries}
            out[key] = entries + [e for e in value if published({"ports": [e]})[0] not in seen]
        elif key in ("command", "entrypoint") or not isinstance(value, (dict, list)):
            out[key] = copy.deepcopy(value)
        elif isinstance(value, dict):  # healthcheck, build, ...: `test` is a value of its own
            out[key] = {**(base.get(key) or {}), **copy.deepcopy(value)}
        else:
            out[key] = list(base.get(key) or []) + copy.deepcopy(value)
    return out


def merge_compose(base: dict, override: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in override.items():
        if key == "services":
            services = out.setdefault("services", {})
            for name, svc in value.items():
                services[name] = merge_service(services.get(name) or {}, svc or {})
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = {**out[key], **value}  # top-level volumes, networks, x-...
        else:
            out[key] = value  # name
    return out


def depends_on(service: dict) -> dict[str, dict]:
    deps = service.get("depends_on") or {}
    if isinstance(deps, list):  # short syntax
        return {name: {"condition": "service_started"} for name in deps}
    return {name: dict(spec or {}) for name, spec in deps.items()}


@pytest.fixture(scope="module")
def cluster_override() -> dict:
    return yaml.safe_load(CLUSTER_FILE.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def cluster(compose, cluster_override) -> dict:
    return merge_compose(compose, cluster_override)


@pytest.fixture(scope="module")
def cluster_services(cluster) -> dict:
    return cluster["services"]


def node_listeners(service: dict) -> tuple[dict, dict]:
    env = env_of(service)
    return parse_listeners(env["KAFKA_LISTENERS"]), parse_listeners(env["KAFKA_ADVERTISED_LISTENERS"])


def test_merge_helper_follows_the_compose_rules():
    base = {"name": "a", "services": {"s": {
        "image": "x:1.0.0", "command": ["a", "b"], "environment": {"A": "1", "B": "2"},
        "volumes": ["./one:/etc/f:ro", "data:/data"], "ports": ["127.0.0.1:1:1"],
        "depends_on": ["db"], "healthcheck": {"test": ["CMD", "a"], "interval": "10s"},
    }}, "volumes": {"data": None}}
    override = {"name": "b", "services": {"s": {
        "command": ["c"], "environment": ["B=3", "C=4"], "volumes": ["./two:/etc/f:ro"],
        "ports": ["127.0.0.1:1:1", "127.0.0.1:2:2"], "depends_on": {"mq": {"condition": "service_healthy"}},
        "healthcheck": {"test": ["CMD", "b"]},
    }, "t": {"image": "y:1.0.0"}}, "volumes": {"more": None}}
    merged = merge_compose(base, override)
    s = merged["services"]["s"]
    assert merged["name"] == "b" and set(merged["services"]) == {"s", "t"} and set(merged["volumes"]) == {"data", "more"}
    assert s["command"] == ["c"] and s["image"] == "x:1.0.0"
    assert s["environment"] == {"A": "1", "B": "3", "C": "4"}
    assert mounts(s) == [("./two", "/etc/f", True), ("data", "/data", False)]
    assert published(s) == [("127.0.0.1", 1, 1), ("127.0.0.1", 2, 2)]
    assert s["depends_on"] == {"db": {"condition": "service_started"}, "mq": {"condition": "service_healthy"}}
    assert s["healthcheck"] == {"test": ["CMD", "b"], "interval": "10s"}
    assert base["services"]["s"]["command"] == ["a", "b"]  # inputs untouched


def test_cluster_is_an_opt_in_override_in_a_project_of_its_own(compose, cluster):
    # Compose reads an override file next to docker-compose.yml by itself: the cluster must
    # not be one, so `docker compose up` keeps the single node.
    for auto in ("docker-compose.override.yml", "docker-compose.override.yaml", "compose.override.yml", "compose.override.yaml"):
        assert not (REPO / auto).exists(), f"{auto} would be merged into every `docker compose up`"
    assert set(compose["services"]) - set(cluster["services"]) == set()
    # its own containers, network and volumes: never the single node's RF-1 kafka-data
    assert cluster["name"] != compose["name"]
    # The single node as before: one voter (test_kafka_is_a_single_kraft_combined_node).
    assert env_of(compose["services"]["kafka"])["KAFKA_CONTROLLER_QUORUM_VOTERS"].count("@") == 1


def test_cluster_has_three_kraft_combined_nodes(services, cluster_services):
    kafkas = sorted(n for n, s in cluster_services.items() if image_ref(s.get("image", ""))[0] == "apache/kafka")
    assert kafkas == sorted(KAFKA_NODES)
    envs = {name: env_of(cluster_services[name]) for name in KAFKA_NODES}
    assert {cluster_services[n]["image"] for n in KAFKA_NODES} == {services["kafka"]["image"]}
    ids = {name: int(env["KAFKA_NODE_ID"]) for name, env in envs.items()}
    assert sorted(ids.values()) == [1, 2, 3]
    assert ids["kafka"] == int(env_of(services["kafka"])["KAFKA_NODE_ID"])  # the single node is node 1
    assert {env["CLUSTER_ID"] for env in envs.values()} == {env_of(services["kafka"])["CLUSTER_ID"]}
    for name, env in envs.items():
        assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}, name
        assert "KAFKA_CONTROLLER_QUORUM_BOOTSTRAP_SERVERS" not in env, name  # static quorum
        listeners, _ = node_listeners(cluster_services[name])
        controller = listeners[env["KAFKA_CONTROLLER_LISTENER_NAMES"]][1]
        # the same static quorum on every node: exactly the three, each on its controller port
        voters = env["KAFKA_CONTROLLER_QUORUM_VOTERS"].split(",")
        assert sorted(voters) == sorted(f"{ids[n]}@{n}:{controller}" for n in KAFKA_NODES), name


def test_cluster_nodes_differ_only_in_their_identity(cluster_services):
    identity = {"KAFKA_NODE_ID", "KAFKA_ADVERTISED_LISTENERS"}
    first = {k: v for k, v in env_of(cluster_services["kafka"]).items() if k not in identity}
    for name in KAFKA_NODES[1:]:
        env = {k: v for k, v in env_of(cluster_services[name]).items() if k not in identity}
        assert env == first, f"{name} drifted from kafka: {set(env.items()) ^ set(first.items())}"
        svc, kafka = cluster_services[name], cluster_services["kafka"]
        for key in ("healthcheck", "restart", "stop_grace_period"):
            assert svc.get(key) == kafka.get(key), f"{name}: {key}"


def test_cluster_replicates_internal_and_new_topics_three_times(cluster_services):
    for name in KAFKA_NODES:
        env = env_of(cluster_services[name])
        for key in (
            "KAFKA_DEFAULT_REPLICATION_FACTOR",
            "KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR",
            "KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR",
            "KAFKA_SHARE_COORDINATOR_STATE_TOPIC_REPLICATION_FACTOR",
        ):
            assert env[key] == "3", f"{name}: {key}"
        for key in ("KAFKA_MIN_INSYNC_REPLICAS", "KAFKA_TRANSACTION_STATE_LOG_MIN_ISR", "KAFKA_SHARE_COORDINATOR_STATE_TOPIC_MIN_ISR"):
            assert env[key] == "2", f"{name}: {key}"
        assert env["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false", name


def test_cluster_listeners_reach_every_node_inside_and_from_the_host(cluster_services):
    host_ports = []
    for name in KAFKA_NODES:
        svc = cluster_services[name]
        listeners, advertised = node_listeners(svc)
        assert {"INTERNAL", "EXTERNAL", "CONTROLLER"} == set(listeners), name
        assert advertised["INTERNAL"] == (name, listeners["INTERNAL"][1]) == (name, 29092), name
        # EXTERNAL: advertised where the host reaches it, a loopback port published to the
        # container's EXTERNAL port (a host client is sent to each leader's EXTERNAL address)
        host, port = advertised["EXTERNAL"]
        assert host in ("localhost", "127.0.0.1"), name
        ports = published(svc)
        assert ("127.0.0.1", port, listeners["EXTERNAL"][1]) in ports, f"{name}: {host}:{port} is not published"
        assert {cont for _, _, cont in ports} == {listeners["EXTERNAL"][1]}, f"{name}: publishes more than EXTERNAL"
        assert all(ip == "127.0.0.1" for ip, _, _ in ports), name
        host_ports.append(port)
    assert host_ports == [9092, 9093, 9094]  # the native cluster's client ports


def test_cluster_nodes_have_their_own_volumes_and_healthchecks(cluster, cluster_services):
    volumes = []
    for name in KAFKA_NODES:
        svc = cluster_services[name]
        env = env_of(svc)
        vols = {target: source for source, target, _ in mounts(svc)}
        assert env["KAFKA_LOG_DIRS"] in vols, name
        assert vols[env["KAFKA_LOG_DIRS"]] in (cluster.get("volumes") or {}), f"{name}: volume not declared"
        volumes.append(vols[env["KAFKA_LOG_DIRS"]])
        assert svc.get("restart") == "unless-stopped", name
        listeners, advertised = node_listeners(svc)
        hc = svc["healthcheck"]
        test = " ".join(hc["test"]) if isinstance(hc["test"], list) else hc["test"]
        assert "kafka-broker-api-versions.sh" in test, name
        m = re.search(r"--bootstrap-server\s+(\S+):(\d+)", test)
        # INTERNAL: its metadata names the nodes by service name, which resolve in every container
        assert m and m.group(1) in ("localhost", "127.0.0.1", name), name
        assert int(m.group(2)) == listeners["INTERNAL"][1] == advertised["INTERNAL"][1], name
        assert seconds(hc["interval"]) >= 10, name
    assert len(set(volumes)) == len(KAFKA_NODES)


def test_cluster_huxue_services_wait_for_every_broker(services, cluster_services):
    for name in ("bridge", "worker", "notifier", "console"):
        deps = depends_on(cluster_services[name])
        assert set(KAFKA_NODES) <= set(deps), name
        assert set(depends_on(services[name])) <= set(deps), f"{name}: lost a dependency of docker-compose.yml"
        for dep, spec in deps.items():
            assert "healthcheck" in cluster_services[dep], f"{name} waits on {dep}, which has no healthcheck"
            assert spec.get("condition") == "service_healthy", f"{name} -> {dep}"


def test_cluster_huxue_services_mount_the_cluster_config(cluster_services):
    bootstrap = ",".join("{}:{}".format(*node_listeners(cluster_services[n])[1]["INTERNAL"]) for n in KAFKA_NODES)
    for name in HUXUE_IMAGE_SERVICES:
        svc = cluster_services[name]
        assert [t for _, t, _ in mounts(svc)].count(CONFIG_IN_CONTAINER) == 1, name
        assert bind_mounts(svc)[CONFIG_IN_CONTAINER] == CLUSTER_CONFIG, name
        env = env_of(svc)
        if "HUXUE_KAFKA_BOOTSTRAP" in env:  # it wins over the file: all three as well
            assert env["HUXUE_KAFKA_BOOTSTRAP"] == bootstrap, name


def test_cluster_bind_mounted_files_exist_and_are_read_only(cluster_services):
    for name, svc in cluster_services.items():
        for source, target, read_only in mounts(svc):
            if source.startswith((".", "/")):
                # relative to docker-compose.yml (the first -f), not to deploy/docker/
                assert (REPO / source).is_file(), f"{name}: {source} does not exist in the repository"
                assert read_only, f"{name}: {source} -> {target} should be mounted :ro"


def test_cluster_config_is_the_compose_config_but_for_kafka():
    single = yaml.safe_load((REPO / "deploy" / "docker" / "huxue.yaml").read_text(encoding="utf-8"))
    ours = yaml.safe_load(CLUSTER_CONFIG.read_text(encoding="utf-8"))
    assert {k: v for k, v in ours.items() if k != "kafka"} == {k: v for k, v in single.items() if k != "kafka"}
    cluster_only = {"bootstrap", "replication_factor"}
    assert {k: v for k, v in ours["kafka"].items() if k not in cluster_only} == {
        k: v for k, v in single["kafka"].items() if k not in cluster_only
    }
    # given, not derived: stack.kafka_brokers is `huxue stack up`'s (one host, consecutive
    # ports) and stays 1, so the loader takes bootstrap and replication_factor as written
    assert "stack" not in ours and ours["kafka"]["replication_factor"] == 3


@pytest.mark.parametrize("name", (*HUXUE_SERVICES, "console"))
def test_cluster_config_loads_as_mounted(cluster_services, tmp_path, name):
    svc = cluster_services[name]
    config = container_tree(svc, tmp_path)
    bootstrap = [f"{n}:29092" for n in KAFKA_NODES]
    env = {k: v for k, v in env_of(svc).items() if k.startswith("HUXUE_")}
    for cfg in (load_config(config, env={}), load_config(config, env=env)):
        assert cfg.kafka.bootstrap.split(",") == bootstrap
        assert cfg.kafka.replication_factor == 3
        assert cfg.stack.kafka_brokers == 1
        assert cfg.mqtt.url == env["HUXUE_MQTT_URL"]
    assert load_registry(cfg.registry_path).schools
