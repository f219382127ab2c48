"""Read `docker-compose.yml` the way Docker Compose does, without a Docker engine.

Shared by tests/unit/test_compose_file.py (schema and wiring) and tests/e2e/test_compose_emulation.py
(running the services as local processes): YAML with anchors and merge keys, `.env`-style files,
`${VAR}` interpolation (`:-`, `-`, `:?`, `?`, `:+`, `+`, `$$`), the `fraud` commands a service runs,
and the `depends_on` order.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
COMPOSE_FILE = ROOT / "docker-compose.yml"
ENV_EXAMPLE = ROOT / ".env.example"

_VAR = re.compile(
    r"\$(?:(?P<escaped>\$)|\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?+])(?P<arg>[^}]*))?\}"
    r"|(?P<named>[A-Za-z_][A-Za-z0-9_]*))"
)


class InterpolationError(ValueError):
    """A `${VAR:?message}` whose variable is missing, or a malformed reference."""


def parse_env_file(path: Path) -> dict[str, str]:
    """KEY=VALUE lines of a compose `.env` file (comments, blank lines, optional quotes)."""
    values: dict[str, str] = {}
    for lineno, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("export "):
            line = line[len("export ") :].lstrip()
        key, sep, value = line.partition("=")
        if not sep or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key.strip()):
            raise ValueError(f"{path}:{lineno}: not KEY=VALUE: {raw!r}")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        else:
            value = re.split(r"\s+#", value, maxsplit=1)[0].rstrip()
        values[key.strip()] = value
    return values


def referenced_variables(text: str) -> dict[str, str | None]:
    """Every `${VAR...}`/`$VAR` in `text` with its operator (None for a plain reference); `$$` skipped."""
    found: dict[str, str | None] = {}
    for m in _VAR.finditer(text):
        if m.group("escaped"):
            continue
        name = m.group("braced") or m.group("named")
        op = m.group("op")
        if name not in found or found[name] is None:
            found[name] = op
    return found


def interpolate(value: str, env: Mapping[str, str]) -> str:
    """Compose's variable substitution for one string."""

    def sub(m: re.Match[str]) -> str:
        if m.group("escaped"):
            return "$"
        name = m.group("braced") or m.group("named")
        op, arg = m.group("op"), m.group("arg") or ""
        current = env.get(name)
        if op is None:
            return current or ""
        is_set = current is not None if not op.startswith(":") else bool(current)
        if op.endswith("-"):
            return current if is_set and current is not None else interpolate(arg, env)
        if op.endswith("+"):
            return interpolate(arg, env) if is_set else ""
        if not is_set:  # ? and :?
            raise InterpolationError(f"required variable {name} is missing: {arg}")
        return current or ""

    return _VAR.sub(sub, value)


def _walk(node: Any, env: Mapping[str, str]) -> Any:
    if isinstance(node, str):
        return interpolate(node, env)
    if isinstance(node, list):
        return [_walk(v, env) for v in node]
    if isinstance(node, dict):
        return {k: _walk(v, env) for k, v in node.items()}
    return node


def load_raw(path: Path = COMPOSE_FILE) -> dict[str, Any]:
    """The YAML document as written (anchors and merge keys resolved, variables not substituted)."""
    data = yaml.safe_load(path.read_text())
    assert isinstance(data, dict), f"{path} is not a mapping"
    return data


def load(env: Mapping[str, str], path: Path = COMPOSE_FILE) -> dict[str, Any]:
    """The compose model after interpolation with `env` (what `docker compose config` would resolve)."""
    model: dict[str, Any] = _walk(load_raw(path), env)
    return model


def environment(service: Mapping[str, Any]) -> dict[str, str]:
    """A service's `environment` (mapping or KEY=VALUE list) as strings; a key without value is dropped."""
    env = service.get("environment") or {}
    if isinstance(env, list):
        pairs = (item.partition("=") for item in env)
        return {k: v for k, sep, v in pairs if sep}
    return {k: ("" if v is None else str(v).lower() if isinstance(v, bool) else str(v)) for k, v in env.items()}


def as_argv(value: Any) -> list[str]:
    """`command`/`entrypoint`: a list stays as is; a string is split like a shell would."""
    if value is None:
        return []
    if isinstance(value, str):
        return shlex.split(value)
    return [str(v) for v in value]


@dataclass(frozen=True)
class FraudCall:
    """One `fraud ...` invocation in a service (its command, or a line of its shell script)."""

    service: str
    args: tuple[str, ...]


def fraud_calls(name: str, service: Mapping[str, Any], image_entrypoint: str = "fraud") -> Iterator[FraudCall]:
    """The `fraud` CLI calls a project service makes: ENTRYPOINT `fraud` + command, or `fraud` lines of a script."""
    entrypoint = as_argv(service["entrypoint"]) if "entrypoint" in service else [image_entrypoint]
    command = as_argv(service.get("command"))
    if entrypoint == ["fraud"]:
        yield FraudCall(name, tuple(command))
        return
    shell_c = any(a.startswith("-") and "c" in a for a in entrypoint[1:])
    if entrypoint and Path(entrypoint[0]).name in ("sh", "bash") and shell_c:
        for script in command[:1]:
            for line in script.splitlines():
                words = shlex.split(line, comments=True)
                if words and words[0] == "fraud":
                    yield FraudCall(name, tuple(words[1:]))


def depends_on(service: Mapping[str, Any]) -> dict[str, str]:
    """`depends_on` as {service: condition} (the short list form means service_started)."""
    deps = service.get("depends_on") or {}
    if isinstance(deps, list):
        return dict.fromkeys(deps, "service_started")
    return {k: (v or {}).get("condition", "service_started") for k, v in deps.items()}


def start_order(services: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """Services in an order that starts every dependency first (stable: file order otherwise)."""
    order: list[str] = []
    state: dict[str, int] = {}

    def visit(name: str, path: tuple[str, ...]) -> None:
        if state.get(name) == 2:
            return
        if state.get(name) == 1:
            raise ValueError("depends_on cycle: " + " -> ".join((*path, name)))
        state[name] = 1
        for dep in depends_on(services[name]):
            visit(dep, (*path, name))
        state[name] = 2
        order.append(name)

    for name in services:
        visit(name, ())
    return order


def is_project_service(service: Mapping[str, Any], project_image: str) -> bool:
    """Built from the project's Dockerfile (the mlflow server included)."""
    return "build" in service or service.get("image") == project_image


def published_ports(service: Mapping[str, Any]) -> list[tuple[str | None, str, str]]:
    """`ports` as (host_ip, published, target) in short or long syntax."""
    out: list[tuple[str | None, str, str]] = []
    for entry in service.get("ports") or []:
        if isinstance(entry, dict):
            out.append((entry.get("host_ip"), str(entry.get("published", "")), str(entry["target"])))
            continue
        parts = str(entry).split("/")[0].rsplit(":", 2)
        if len(parts) == 3:
            out.append((parts[0], parts[1], parts[2]))
        elif len(parts) == 2:
            out.append((None, parts[0], parts[1]))
        else:
            out.append((None, "", parts[0]))
    return out


def container_ports(service: Mapping[str, Any]) -> set[int]:
    """Ports a service listens on inside its container: `expose` and published targets."""
    ports = {int(str(p).split("/")[0]) for p in service.get("expose") or []}
    ports |= {int(target) for _, _, target in published_ports(service)}
    return ports


def named_volumes(service: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(volume name, mount path) for every named-volume mount of a service (bind mounts skipped)."""
    out: list[tuple[str, str]] = []
    for entry in service.get("volumes") or []:
        if isinstance(entry, dict):
            if entry.get("type", "volume") == "volume" and entry.get("source"):
                out.append((entry["source"], entry["target"]))
            continue
        source, _, rest = str(entry).partition(":")
        target = rest.split(":")[0]
        if target and not source.startswith((".", "/", "~")):
            out.append((source, target))
    return out
