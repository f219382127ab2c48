"""`docker-compose.yml`, `Dockerfile`, `.env.example`: valid and wired, proven without a Docker engine.

- The compose file, interpolated with `.env.example`, validates against the Compose Specification's
  official JSON schema (vendored in tests/data, see its README).
- Wiring: image or build everywhere; `depends_on` targets exist, form no cycle, and wait on a healthcheck
  or a one-shot's completion; published ports and named volumes are declared; host names in
  environment values, commands and URLs are compose services listening on that port.
- Settings: each project service's `fraud` commands exist in the CLI and accept their options; the
  pydantic-settings classes those commands build are introspected, and every FRAUD_* field without a
  usable default inside a container (loopback hosts, relative paths, secrets, embedded-only modes) is
  set in the service's environment; the environment then validates against those classes.
- Secrets only through the environment, nothing in the image: `docker compose up` needs no `.env`, so
  each secret falls back to a default marked demo-only (`${VAR:-demo-only-...}`) that `.env.example`
  overrides with a value of its own.
"""

from __future__ import annotations

import hashlib
import http.server
import inspect
import os
import re
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, get_args

import jsonschema
import pytest
import typer.main
from pydantic import SecretStr
from pydantic_settings import BaseSettings

import fraud.settings as settings_module
from fraud.cli import app
from tests import compose_model as cm

ROOT = cm.ROOT
SCHEMA = ROOT / "tests" / "data" / "compose-spec.json"
SCHEMA_README = ROOT / "tests" / "data" / "README.md"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"

ENV = cm.parse_env_file(cm.ENV_EXAMPLE)
RAW = cm.load_raw()
MODEL = cm.load(ENV)
SERVICES: dict[str, dict[str, Any]] = MODEL["services"]
PROJECT_IMAGE = ENV.get("FRAUD_IMAGE") or "crypto-fraud-detection:local"
PROJECT = sorted(n for n, s in SERVICES.items() if cm.is_project_service(s, PROJECT_IMAGE))
FRAUD_SERVICES = sorted(n for n in PROJECT if list(cm.fraud_calls(n, SERVICES[n])))
LOOPBACK = ("127.0.0.1", "localhost", "::1")
SECRET_NAME = re.compile(r"(PASSWORD|SECRET|TOKEN|API_KEYS?|_KEY)$")
DEMO_ONLY = "demo-only-"  # the mark on a secret's default: for `docker compose up` on a laptop, never production

# Settings whose default only works on one machine: inside a container each service would get its own.
CONTAINER_SPECIFIC = {
    "feast_mode": "the embedded default keeps the online store in a SQLite file inside each container",
    "mlflow_tracking_uri": "the default is a SQLite file inside each container, not the shared MLflow server",
}
# Expected per the issue: each of these services exists and is a one-shot (or long-running).
ONE_SHOTS = {"topics", "simulator-history", "trainer"}
INFRA = {"kafka", "redis", "postgres", "mlflow"}
LONG_RUNNING = INFRA | {"ingest", "ingest-labels", "simulator-live", "scorer", "traffic"}


# ------------------------------------------------------------------------------------------ schema
def test_vendored_schema_is_the_documented_one() -> None:
    digest = hashlib.sha256(SCHEMA.read_bytes()).hexdigest()
    assert digest in SCHEMA_README.read_text(), "tests/data/compose-spec.json changed: update tests/data/README.md"
    assert (ROOT / "tests" / "data" / "compose-spec.LICENSE").read_text().lstrip().startswith("Apache License")


def test_compose_file_validates_against_the_compose_specification() -> None:
    import json

    schema = json.loads(SCHEMA.read_text())
    validator = jsonschema.Draft202012Validator(schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER)
    errors = sorted(validator.iter_errors(MODEL), key=lambda e: list(e.absolute_path))
    assert not errors, "\n".join(f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in errors)


def test_schema_rejects_a_broken_file() -> None:
    """The validator really bites: an unknown service key and a bad depends_on condition fail."""
    import json

    validator = jsonschema.Draft202012Validator(json.loads(SCHEMA.read_text()))
    broken = {"services": {"a": {"image": "x", "depends_on": {"b": {"condition": "healthy"}}, "comand": "typo"}}}
    assert len(list(validator.iter_errors(broken))) >= 2


def test_every_variable_is_documented_in_env_example() -> None:
    text = cm.COMPOSE_FILE.read_text()
    refs = cm.referenced_variables(text)
    undocumented = sorted(v for v, op in refs.items() if v not in ENV and op not in (":-", "-"))
    assert not undocumented, f"variables without a default that .env.example does not set: {undocumented}"
    unused = sorted(set(ENV) - set(refs))
    assert not unused, f".env.example sets variables docker-compose.yml never uses: {unused}"


def test_secrets_have_demo_only_defaults_that_env_example_overrides() -> None:
    """`docker compose up` runs with nothing to prepare: every secret falls back to a value marked
    demo-only; `.env.example` (what production copies to `.env`) sets each one to something else.
    (Before, compose refused to start until a `.env` was written.)"""
    bare = cm.load({})  # no .env, no environment: interpolates without an error
    secrets = 0
    for name, service in RAW["services"].items():
        for key, value in cm.environment(service).items():
            if SECRET_NAME.search(key):
                secrets += 1
                refs = cm.referenced_variables(value)
                assert refs and all(op == ":-" for op in refs.values()), (
                    f"{name}: {key} must come from a variable with a demo-only default, not {value!r}"
                )
                defaulted = cm.environment(bare["services"][name])[key]
                assert DEMO_ONLY in defaulted, f"{name}: {key}'s default {defaulted!r} is not marked {DEMO_ONLY!r}"
                for var in refs:
                    assert var in ENV and DEMO_ONLY not in ENV[var], f".env.example must override {var}"
    assert secrets >= 4


# ------------------------------------------------------------------------------------------ wiring
def test_the_issue_services_exist() -> None:
    assert set(SERVICES) >= ONE_SHOTS | LONG_RUNNING
    for name in ("kafka", "redis", "postgres"):
        assert "image" in SERVICES[name]
    assert SERVICES["kafka"]["image"].startswith("apache/kafka:")


def test_every_service_has_an_image_or_a_build() -> None:
    for name, service in SERVICES.items():
        assert "image" in service or "build" in service, name
    images = {SERVICES[n].get("image") for n in PROJECT}
    assert images == {PROJECT_IMAGE}, f"project services must share one image: {images}"
    for name in PROJECT:
        assert SERVICES[name]["build"]["dockerfile"] == "Dockerfile"


def test_project_containers_are_non_root_read_only_and_unprivileged() -> None:
    """Every container of the project's image: read-only root file system, scratch on tmpfs, no capabilities."""
    for name in PROJECT:
        service = SERVICES[name]
        assert service.get("read_only") is True, name
        assert "/tmp" in service.get("tmpfs", []), name
        assert service.get("cap_drop") == ["ALL"], name
        assert "no-new-privileges:true" in service.get("security_opt", []), name
        assert "user" not in service or not str(service["user"]).startswith(("0", "root")), name


def test_depends_on_targets_exist_without_cycles() -> None:
    for name, service in SERVICES.items():
        for dep, condition in cm.depends_on(service).items():
            assert dep in SERVICES, f"{name} depends on unknown service {dep}"
            assert dep != name
            assert condition in ("service_healthy", "service_completed_successfully"), (
                f"{name} -> {dep}: wait on health or completion, not {condition}"
            )
    order = cm.start_order(SERVICES)
    assert order.index("trainer") > order.index("simulator-history")
    assert order.index("scorer") > order.index("trainer")


def _healthcheck(service: dict[str, Any]) -> dict[str, Any] | None:
    """The service's healthcheck, the image's HEALTHCHECK for project services without one, None if disabled."""
    check = service.get("healthcheck")
    if check is not None:
        return None if check.get("disable") else check
    return {"test": "Dockerfile HEALTHCHECK"} if cm.is_project_service(service, PROJECT_IMAGE) else None


def test_healthchecks_and_one_shots() -> None:
    for name in LONG_RUNNING:
        check = _healthcheck(SERVICES[name])
        assert check is not None, f"long-running service {name} has no healthcheck"
        assert SERVICES[name].get("restart") in ("unless-stopped", "always", "no"), name
    for name in ONE_SHOTS:
        assert SERVICES[name].get("restart") == "no", f"one-shot {name} must not restart"
    for name, service in SERVICES.items():
        for dep, condition in cm.depends_on(service).items():
            if condition == "service_healthy":
                assert _healthcheck(SERVICES[dep]) is not None, f"{name} waits for {dep} healthy: no healthcheck"
            else:
                assert dep in ONE_SHOTS, f"{name} waits for {dep} to complete, but {dep} never ends"


def test_published_ports_are_declared_and_loopback_only() -> None:
    seen: dict[str, str] = {}
    for name, service in SERVICES.items():
        listening = cm.container_ports(service)
        for host_ip, published, target in cm.published_ports(service):
            assert host_ip == "127.0.0.1", f"{name} publishes {published}:{target} on all interfaces"
            assert int(target) in {int(str(p)) for p in service.get("expose", [])}, f"{name}: {target} not exposed"
            assert published and published not in seen, f"{name}: host port {published} taken by {seen.get(published)}"
            seen[published] = name
            assert int(target) in listening
    scorer_env = cm.environment(SERVICES["scorer"])
    assert [t for _, _, t in cm.published_ports(SERVICES["scorer"])] == [scorer_env["FRAUD_SCORER_PORT"]]
    assert scorer_env["FRAUD_SCORER_HOST"] == "0.0.0.0", "the scorer must listen beyond the container's loopback"
    mlflow_cmd = cm.as_argv(SERVICES["mlflow"]["command"])
    assert [t for _, _, t in cm.published_ports(SERVICES["mlflow"])] == [mlflow_cmd[mlflow_cmd.index("--port") + 1]]


def test_named_volumes_are_declared_and_used() -> None:
    declared = set(MODEL.get("volumes") or {})
    used: set[str] = set()
    for name, service in SERVICES.items():
        for volume, _target in cm.named_volumes(service):
            assert volume in declared, f"{name} mounts undeclared volume {volume}"
            used.add(volume)
    assert used == declared, f"declared but unused volumes: {declared - used}"
    for name in FRAUD_SERVICES:
        data_dir = cm.environment(SERVICES[name]).get("FRAUD_DATA_DIR", "<unset>")
        mounts = dict((t, v) for v, t in cm.named_volumes(SERVICES[name]))
        assert mounts.get(data_dir) == "fraud-data", f"{name}: FRAUD_DATA_DIR={data_dir} is not the shared volume"


_HOST_PORT = re.compile(r"(?:^|(?<=//)|(?<=@)|(?<=,)|(?<=\s))([A-Za-z][A-Za-z0-9_.-]*):(\d{2,5})\b")


def _strings(node: Any) -> Iterator[str]:
    if isinstance(node, str):
        yield node
    elif isinstance(node, list):
        for v in node:
            yield from _strings(v)
    elif isinstance(node, dict):
        for v in node.values():
            yield from _strings(v)


def test_host_names_resolve_to_compose_services() -> None:
    """Every host:port in an environment value, command or healthcheck is a service listening there."""
    for name, service in SERVICES.items():
        places = [
            *cm.environment(service).values(),
            *_strings(service.get("command")),
            *_strings(service.get("healthcheck", {}).get("test")),
        ]
        for text in places:
            for host, port in _HOST_PORT.findall(text):
                if host in LOOPBACK or host == name:
                    continue  # the container itself (healthchecks run inside it)
                assert host in SERVICES, f"{name}: {host}:{port} in {text!r} is not a compose service"
                assert int(port) in cm.container_ports(SERVICES[host]), f"{name}: {host} does not listen on {port}"
    for name in FRAUD_SERVICES:
        for key, value in cm.environment(SERVICES[name]).items():
            if key.startswith("FRAUD_"):
                assert not any(h in value for h in LOOPBACK), f"{name}: {key}={value} points at the container itself"


# ------------------------------------------------------------------------------------------ settings
def _resolve(args: tuple[str, ...]) -> tuple[Any, list[str], str]:
    """The (Typer's click) command a `fraud ...` argv runs, its remaining arguments, and its full name."""
    cmd: Any = typer.main.get_command(app)
    rest, path = list(args), list[str]()
    while isinstance(getattr(cmd, "commands", None), dict):  # a group
        assert rest, f"`fraud {' '.join(path)}` needs a subcommand"
        sub = cmd.commands.get(rest[0])
        assert sub is not None, f"the CLI has no command `fraud {' '.join([*path, rest[0]])}`"
        path.append(rest.pop(0))
        cmd = sub
    return cmd, rest, " ".join(path)


def settings_classes(cmd: Any) -> list[type[BaseSettings]]:
    """The pydantic-settings classes a command builds, read from its callback's source (and its CLI helpers')."""
    import fraud.cli as cli_module

    assert cmd.callback is not None
    sources, seen = [inspect.getsource(inspect.unwrap(cmd.callback))], set[str]()
    for source in sources:  # follow calls to helper functions of fraud/cli.py (e.g. `_train_settings()`)
        for helper in re.findall(r"\b(_?[a-z]\w*)\(", source):
            func = getattr(cli_module, helper, None)
            if helper not in seen and inspect.isfunction(func) and func.__module__ == cli_module.__name__:
                seen.add(helper)
                sources.append(inspect.getsource(func))
    names = dict.fromkeys(n for src in sources for n in re.findall(r"\b([A-Z]\w*Settings)\(", src))
    classes = [getattr(settings_module, n) for n in names if hasattr(settings_module, n)]
    return [c for c in classes if isinstance(c, type) and issubclass(c, BaseSettings)]


def env_name(cls: type[BaseSettings], field: str) -> str:
    return f"{cls.model_config.get('env_prefix', '')}{field}".upper()


def container_required(cls: type[BaseSettings]) -> dict[str, str]:
    """{ENV_NAME: why} for every field whose default is no use inside a container."""
    required: dict[str, str] = {}
    for field, info in cls.model_fields.items():
        default = info.get_default(call_default_factory=True)
        why = CONTAINER_SPECIFIC.get(field)
        annotation = str(info.annotation)
        if SecretStr in get_args(info.annotation) or "SecretStr" in annotation or SECRET_NAME.search(field.upper()):
            why = "a secret: no default, set from .env"
        elif isinstance(default, str) and any(h in default for h in LOOPBACK):
            why = f"the default {default!r} is the container itself"
        elif isinstance(default, Path) and not default.is_absolute():
            why = f"the default {str(default)!r} is relative to the working directory, not the shared volume"
        if why:
            required[env_name(cls, field)] = why
    return required


def _known_env_names() -> set[str]:
    names: set[str] = set()
    for obj in vars(settings_module).values():
        if isinstance(obj, type) and issubclass(obj, BaseSettings) and obj is not BaseSettings:
            names |= {env_name(obj, f) for f in obj.model_fields}
    return names


def test_compose_runs_the_commands_the_issue_names() -> None:
    calls = {n: [c.args[:2] if c.args[:1] == ("features",) else c.args[:1] for c in cm.fraud_calls(n, SERVICES[n])]
             for n in FRAUD_SERVICES}  # fmt: skip
    assert calls["simulator-history"] == [("features", "apply"), ("simulate",), ("backfill",)]
    assert calls["simulator-live"] == [("simulate",)]
    assert {n: c for n, c in calls.items() if n not in ("simulator-history", "simulator-live")} == {
        "topics": [("topics",)],
        "ingest": [("ingest",)],
        "ingest-labels": [("ingest-labels",)],
        "trainer": [("train",)],
        "scorer": [("serve",)],
        "traffic": [("traffic",)],
        "monitor": [("monitor",)],
    }
    assert "--to" in (a := next(cm.fraud_calls("simulator-live", SERVICES["simulator-live"])).args)
    assert a[a.index("--to") + 1] == "kafka" and "--realtime" in a


@pytest.mark.parametrize("service", FRAUD_SERVICES)
def test_service_settings_are_set(service: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each `fraud` call: the command exists, takes its options, and its settings are complete and valid."""
    env = cm.environment(SERVICES[service])
    unknown = sorted(k for k in env if k.startswith("FRAUD_") and k not in _known_env_names())
    assert not unknown, f"{service}: no settings class reads {unknown} (typo?)"
    for key in [k for k in os.environ if k.startswith("FRAUD_")]:
        monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    for call in cm.fraud_calls(service, SERVICES[service]):
        cmd, rest, path = _resolve(call.args)
        cmd.make_context(f"fraud {path}", rest)  # raises on an unknown or missing option
        classes = settings_classes(cmd)
        assert classes, f"`fraud {path}` builds no settings class from fraud.settings"
        for cls in classes:
            missing = {k: why for k, why in container_required(cls).items() if k not in env}
            assert not missing, f"{service}: `fraud {path}` ({cls.__name__}) needs " + "; ".join(
                f"{k} ({why})" for k, why in missing.items()
            )
            cls()  # validates every value compose gives it (the environment is the service's alone)


def test_the_stores_point_at_the_compose_services() -> None:
    for name in FRAUD_SERVICES:
        env = cm.environment(SERVICES[name])
        assert env["FRAUD_KAFKA_BOOTSTRAP_SERVERS"] == "kafka:9092"
        assert env["FRAUD_FEAST_MODE"] == "compose" and env["FRAUD_FEAST_REDIS_URL"] == "redis:6379"
    for name in ("trainer", "scorer"):
        assert cm.environment(SERVICES[name])["FRAUD_MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
    backend = cm.as_argv(SERVICES["mlflow"]["command"])
    assert backend[backend.index("--backend-store-uri") + 1].startswith("postgresql+psycopg2://")
    assert "--serve-artifacts" in backend
    assert cm.environment(SERVICES["traffic"])["FRAUD_TRAFFIC_URL"] == "http://scorer:8000"


# ------------------------------------------------------------------------------------------ Dockerfile
def _instructions() -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.strip().startswith("#")]
    return [(ln.split(None, 1)[0].upper(), ln.split(None, 1)[1] if " " in ln else "") for ln in lines]


def test_dockerfile_is_multi_stage_slim_non_root_with_a_healthcheck() -> None:
    ins = _instructions()
    froms = [arg for op, arg in ins if op == "FROM"]
    assert len(froms) >= 2, "multi-stage build expected"
    args = dict(a.split("=", 1) for op, a in ins if op == "ARG" and "=" in a)
    bases = {re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], f.split()[0]) for f in froms}
    assert all(b.startswith("python:3.11-slim") for b in bases), bases
    last = max(i for i, (op, _) in enumerate(ins) if op == "FROM")
    final = ins[last:]
    users = [a for op, a in final if op == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0"), "the runtime stage must run as a non-root user"
    assert any(op == "HEALTHCHECK" for op, _ in final)
    assert ("ENTRYPOINT", '["fraud"]') in final
    assert any(op == "RUN" and "-r requirements.lock" in a for op, a in ins), "dependencies come from the lock file"


def test_dockerfile_bakes_no_secret_and_copies_what_exists() -> None:
    ins = _instructions()
    for op, arg in ins:
        if op in ("ENV", "ARG"):
            for key in re.findall(r"([A-Za-z_][A-Za-z0-9_]*)=", arg) or [arg.split("=")[0]]:
                assert not SECRET_NAME.search(key.upper()), f"{op} {key}: secrets only at run time"
    ignored = DOCKERIGNORE.read_text().splitlines()
    assert ".env" in ignored, ".env must never reach the build context"
    for op, arg in ins:
        if op == "COPY" and "--from=" not in arg:
            for source in arg.split()[:-1]:
                assert (ROOT / source).exists(), f"COPY {source}: no such file"
                assert source not in ignored, f"COPY {source} is excluded by .dockerignore"


# ------------------------------------------------------------------------------------------ the probe
def test_healthcheck_probe() -> None:
    import importlib.util

    spec = importlib.util.spec_from_file_location("healthcheck", ROOT / "infra" / "docker" / "healthcheck.py")
    assert spec and spec.loader
    probe = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(probe)

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200 if self.path == "/readyz" else 503)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    port = server.server_address[1]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            closed = s.getsockname()[1]
        assert probe.main(["--url", f"http://127.0.0.1:{port}/readyz"]) == 0
        assert probe.main(["--url", f"http://127.0.0.1:{port}/other"]) == 1
        assert probe.main(["--tcp", f"127.0.0.1:{port}"]) == 0
        assert probe.main(["--tcp", f"127.0.0.1:{closed}", "--timeout", "1"]) == 1
    finally:
        server.shutdown()
        server.server_close()
