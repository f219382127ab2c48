"""`docker compose up`, emulated without a Docker engine: the compose file's own services, for real.

The test reads docker-compose.yml (interpolated like compose does, from .env.example plus small sizes),
then plays every service in `depends_on` order:

- infrastructure on loopback: a dedicated Apache Kafka broker (infra/kafka/broker.sh, its own home and
  ports), Redis and PostgreSQL from Debian's packages (infra/compose_emulation.sh, with the role and
  database of the `postgres` service's POSTGRES_* environment);
- every service built from the project's image (the MLflow server included) as a local process: its
  `entrypoint`/`command` with the image's and the service's environment, where each container
  `host:port` becomes 127.0.0.1:<a free port>, 0.0.0.0 becomes 127.0.0.1 and each named-volume mount
  becomes a folder of the test; one-shots must exit 0 (`service_completed_successfully`), long-running
  services must pass the service's own healthcheck command (`service_healthy`) before dependants start.

Then it asserts the demo's outcome: a champion registered in MLflow whose backend store is Postgres,
features in Redis (read back through Feast), live events ingested, and the scorer answering /v1/score
with a decision. Everything started is stopped, whatever happens; the whole test is bounded in time.
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import pytest

from tests import compose_model as cm

ROOT = cm.ROOT
VENV_BIN = ROOT / ".venv" / "bin"
BROKER = ROOT / "infra" / "kafka" / "broker.sh"
EMULATION = ROOT / "infra" / "compose_emulation.sh"
INFRA = ("kafka", "redis", "postgres")  # third-party images: started natively
# Third-party images with no native stand-in here: observability on top of the demo, which nothing the
# demo's outcome needs depends on (checked). Any other third-party service fails the test until mapped.
NOT_EMULATED = {
    "prometheus": "scrapes the services' /metrics (the emulation probes those endpoints itself)",
    "grafana": "dashboards over Prometheus",
}
# `up` must finish within BUDGET_S; assertions and teardown get 60 s more (default: under 6 minutes in all).
BUDGET_S = float(os.environ.get("COMPOSE_EMU_BUDGET_S", "900"))
pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(BUDGET_S + 60)]

# Small sizes through compose's own variables (override any of them from the environment).
SIZES = {
    # enough test-period frauds (>= 10) for the trainer's gate to promote a champion, yet small
    "FRAUD_SIM_USERS": "600",
    "FRAUD_SIM_DAYS": "42",
    "FRAUD_SIM_FRAUD_RATE": "0.04",
    "FRAUD_SIM_LIVE_USERS": "200",
    "FRAUD_SIM_LIVE_DAYS": "1",
    "FRAUD_SIM_LIVE_RATE": "50",
    "FRAUD_SCORER_WORKERS": "1",
    "FRAUD_SCORER_POLL_SECONDS": "5",
    "FRAUD_TRAFFIC_RATE": "5",
    "MLFLOW_WORKERS": "1",
    "FRAUD_LOG_LEVEL": "INFO",
}
SECRETS = {
    "POSTGRES_PASSWORD": f"pw-{uuid.uuid4().hex[:12]}",
    "FRAUD_SCORER_API_KEYS": "emu-key-1,emu-key-2",
    "FRAUD_TRAFFIC_API_KEY": "emu-key-2",
}
# Inherited from the host: locale, temp dir, and the OpenBLAS settings some processors need.
PASS_THROUGH = ("LANG", "LC_ALL", "TMPDIR", "OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "JAVA_HOME")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def image_env() -> dict[str, str]:
    """ENV of the Dockerfile's final stage (PATH and HOME excepted: the host's own are used)."""
    text = re.sub(r"\\\n", " ", (ROOT / "Dockerfile").read_text())
    stages = re.split(r"(?m)^FROM\s", text)
    env: dict[str, str] = {}
    for line in stages[-1].splitlines():
        if line.strip().startswith("ENV "):
            for word in shlex.split(line.strip()[4:]):
                key, sep, value = word.partition("=")
                if sep and key not in ("PATH", "HOME"):
                    env[key] = value
    return env


@dataclass
class Process:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path
    handle: IO[bytes]


@dataclass
class Emulation:
    """The compose model mapped onto this machine, and everything started for it."""

    model: dict[str, Any]
    work: Path  # volumes and logs
    infra_home: Path  # Redis/Postgres/Kafka state (under data/: the postgres account must reach it)
    ports: dict[tuple[str, int], int] = field(default_factory=dict)
    volumes: dict[str, Path] = field(default_factory=dict)
    processes: list[Process] = field(default_factory=list)
    timeline: list[tuple[float, str, str]] = field(default_factory=list)
    cleanups: list[Callable[[], object]] = field(default_factory=list)
    deadline: float = field(default_factory=lambda: time.monotonic() + BUDGET_S)

    @property
    def services(self) -> dict[str, dict[str, Any]]:
        services: dict[str, dict[str, Any]] = self.model["services"]
        return services

    # -- mapping ---------------------------------------------------------------------------------
    def own_ports(self, name: str) -> set[int]:
        """Ports a service listens on: expose, published targets, and loopback ports its healthcheck probes."""
        service = self.services[name]
        ports = cm.container_ports(service)
        test = " ".join(cm.as_argv((service.get("healthcheck") or {}).get("test")))
        ports |= {int(p) for p in re.findall(r"(?:127\.0\.0\.1|localhost):(\d+)", test)}
        return ports

    def allocate(self) -> None:
        for name in self.services:
            for port in self.own_ports(name):
                self.ports[(name, port)] = free_port()
        for volume in self.model.get("volumes") or {}:
            self.volumes[volume] = self.work / "volumes" / volume
            self.volumes[volume].mkdir(parents=True, exist_ok=True)

    def port(self, name: str, container_port: int) -> int:
        return self.ports[(name, container_port)]

    def rewrite(self, name: str, text: str) -> str:
        """A value as seen from service `name`, mapped onto loopback ports and the test's folders."""
        own = self.own_ports(name)

        def host_port(m: re.Match[str]) -> str:
            host, port = m.group(1), int(m.group(2))
            target = name if host in ("127.0.0.1", "localhost") else host
            if (target, port) in self.ports:
                return f"127.0.0.1:{self.ports[(target, port)]}"
            return m.group(0)

        text = re.sub(r"(?<![\w.-])([A-Za-z0-9][A-Za-z0-9_.-]*):(\d{2,5})\b", host_port, text)
        text = re.sub(r"(?<![\d.])0\.0\.0\.0(?![\d.])", "127.0.0.1", text)
        if text.isdigit() and int(text) in own:
            return str(self.port(name, int(text)))
        for volume, target in cm.named_volumes(self.services[name]):
            text = re.sub(rf"(?<![\w/.-]){re.escape(target)}(?=/|\s|$|\b)", str(self.volumes[volume]), text)
        return text

    def env_of(self, name: str) -> dict[str, str]:
        base = {k: os.environ[k] for k in PASS_THROUGH if k in os.environ}
        base |= {
            "PATH": f"{VENV_BIN}:/usr/local/bin:/usr/bin:/bin",
            "HOME": os.environ.get("HOME", "/root"),
            "PYTHONUNBUFFERED": "1",
        }
        merged = image_env() | cm.environment(self.services[name])
        env = base | {k: self.rewrite(name, v) for k, v in merged.items()}
        # Servers started here listen on loopback only: a "listen on every interface" switch goes off.
        return env | {k: "false" for k in env if k.endswith("_PUBLIC")}

    def argv_of(self, name: str) -> list[str]:
        service = self.services[name]
        entry = cm.as_argv(service["entrypoint"]) if "entrypoint" in service else ["fraud"]
        argv = [self.rewrite(name, a) for a in entry + cm.as_argv(service.get("command"))]
        if (VENV_BIN / argv[0]).exists():
            argv[0] = str(VENV_BIN / argv[0])
        return argv

    # -- processes -------------------------------------------------------------------------------
    def remaining(self) -> float:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"compose emulation over its {BUDGET_S:.0f}s budget")
        return left

    def log_tail(self, log: Path, lines: int = 25) -> str:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:]) if log.exists() else "(no log)"

    def start(self, name: str) -> Process:
        log = self.work / "logs" / f"{name}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        handle = open(log, "ab")  # noqa: SIM115 (closed in stop_all)
        popen = subprocess.Popen(
            self.argv_of(name),
            cwd=ROOT,
            env=self.env_of(name),
            stdout=handle,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        proc = Process(name, popen, log, handle)
        self.processes.append(proc)
        return proc

    def healthy(self, name: str) -> bool:
        """Run the service's own healthcheck command, mapped like the service."""
        test = cm.as_argv(self.services[name]["healthcheck"]["test"])
        if test[0] == "CMD-SHELL":
            argv = ["/bin/sh", "-c", self.rewrite(name, test[1])]
        else:
            argv = [self.rewrite(name, a) for a in test[1:]]
            if (VENV_BIN / argv[0]).exists():
                argv[0] = str(VENV_BIN / argv[0])
        try:
            return (
                subprocess.run(argv, cwd=ROOT, env=self.env_of(name), capture_output=True, timeout=10).returncode == 0
            )
        except subprocess.TimeoutExpired:
            return False

    def stop_all(self) -> None:
        for proc in reversed(self.processes):
            if proc.popen.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.popen.pid, signal.SIGTERM)
        for proc in reversed(self.processes):
            try:
                proc.popen.wait(timeout=20)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.popen.pid, signal.SIGKILL)
                proc.popen.wait(timeout=10)
            proc.handle.close()
        for cleanup in reversed(self.cleanups):
            cleanup()

    # -- infrastructure --------------------------------------------------------------------------
    def start_infra(self, name: str) -> None:
        service = self.services[name]
        if name == "kafka":
            env = os.environ | {
                "KAFKA_HOME": str(self.infra_home / "kafka"),
                "KAFKA_PORT": str(self.port("kafka", 9092)),
                "KAFKA_CONTROLLER_PORT": str(free_port()),
                "KAFKA_HEAP_OPTS": cm.environment(service).get("KAFKA_HEAP_OPTS", "-Xms256m -Xmx768m"),
            }
            self.cleanups.append(lambda: subprocess.run([str(BROKER), "stop"], env=env, check=False, timeout=60))
            subprocess.run([str(BROKER), "start"], env=env, check=True, timeout=self.remaining())
            from fraud.kafka import wait_for_broker

            wait_for_broker(f"127.0.0.1:{self.port('kafka', 9092)}", 30)
        elif name in ("redis", "postgres"):
            pg = cm.environment(self.services["postgres"])
            env = os.environ | {
                "EMU_HOME": str(self.infra_home),
                "EMU_REDIS_PORT": str(self.port("redis", 6379)),
                "EMU_PG_PORT": str(self.port("postgres", 5432)),
                "EMU_PG_USER": pg["POSTGRES_USER"],
                "EMU_PG_PASSWORD": pg["POSTGRES_PASSWORD"],
                "EMU_PG_DB": pg["POSTGRES_DB"],
            }
            self.cleanups.append(lambda: subprocess.run([str(EMULATION), "stop"], env=env, check=False, timeout=60))
            # A first run may install the Debian packages: allow it more than the services' budget.
            subprocess.run([str(EMULATION), "start"], env=env, check=True, timeout=max(self.remaining(), 300))
        else:
            raise AssertionError(f"no native stand-in for the {name} image")

    def check_coverage(self) -> None:
        """Every service is emulated (project image or native stand-in) or knowingly left out."""
        for name, service in self.services.items():
            if name in INFRA or name in NOT_EMULATED:
                continue
            assert "build" in service, f"{name} ({service.get('image')}): no native stand-in; map it or list it"
        for name in self.services:
            if name not in NOT_EMULATED:
                left_out = set(cm.depends_on(self.services[name])) & set(NOT_EMULATED)
                assert not left_out, f"{name} depends on {left_out}, which the emulation does not run"

    def is_one_shot(self, name: str) -> bool:
        service = self.services[name]
        return service.get("restart") == "no" and bool((service.get("healthcheck") or {}).get("disable"))

    def up(self) -> None:
        """`docker compose up`: start each service as soon as its depends_on conditions hold, like compose.

        `timeline` records (seconds since start, service, state): started, healthy, completed.
        """
        t0 = time.monotonic()
        self.check_coverage()
        order = [n for n in cm.start_order(self.services) if n not in NOT_EMULATED]  # also rejects cycles
        state: dict[str, str] = dict.fromkeys(order, "pending")
        procs: dict[str, Process] = {}
        infra: dict[str, Future[None]] = {}
        last_probe: dict[str, float] = {}

        def mark(name: str, new: str) -> None:
            state[name] = new
            self.timeline.append((round(time.monotonic() - t0, 1), name, new))

        def satisfied(name: str) -> bool:
            need = {"service_healthy": "healthy", "service_completed_successfully": "completed"}
            return all(
                state[dep] == need.get(cond, state[dep]) and state[dep] != "pending"
                for dep, cond in cm.depends_on(self.services[name]).items()
            )

        with ThreadPoolExecutor(max_workers=len(INFRA)) as pool:
            while not all(v in ("healthy", "completed") for v in state.values()):
                self.remaining()
                for name in order:
                    if state[name] == "pending" and satisfied(name):
                        if name in INFRA:
                            # Redis and Postgres come up together (one script): share one start.
                            pair = infra.get("redis" if name == "postgres" else "postgres")
                            together = name in ("redis", "postgres") and pair is not None
                            infra[name] = pair if together and pair else pool.submit(self.start_infra, name)
                        else:
                            procs[name] = self.start(name)
                        mark(name, "started")
                for name in [n for n, v in state.items() if v == "started"]:
                    if name in INFRA:
                        if infra[name].done():
                            infra[name].result()  # raises the start failure
                            mark(name, "healthy")
                        continue
                    proc = procs[name]
                    rc = proc.popen.poll()
                    if self.is_one_shot(name):
                        if rc is not None:
                            assert rc == 0, f"one-shot {name} exited {rc}: service_completed_successfully fails\n" + (
                                self.log_tail(proc.log)
                            )
                            mark(name, "completed")
                        continue
                    if rc is not None:
                        raise AssertionError(f"{name} exited {rc} before it was healthy\n{self.log_tail(proc.log)}")
                    if time.monotonic() - last_probe.get(name, 0.0) >= 2.0:
                        last_probe[name] = time.monotonic()
                        if self.healthy(name):
                            mark(name, "healthy")
                time.sleep(0.3)


@pytest.fixture
def emulation(tmp_path: Path) -> Iterator[Emulation]:
    overrides = {k: os.environ.get(f"COMPOSE_EMU_{k}", v) for k, v in SIZES.items()}
    env = cm.parse_env_file(cm.ENV_EXAMPLE) | overrides | SECRETS
    infra_home = ROOT / "data" / "compose-emulation" / f"run-{uuid.uuid4().hex[:8]}"
    emu = Emulation(model=cm.load(env), work=tmp_path, infra_home=infra_home)
    emu.allocate()
    try:
        yield emu
    finally:
        emu.stop_all()
        shutil.rmtree(infra_home, ignore_errors=True)


def _scorer_request(emu: Emulation, body: Mapping[str, Any]) -> Any:
    import httpx

    env = cm.environment(emu.services["scorer"])
    key = env["FRAUD_SCORER_API_KEYS"].split(",")[0]
    url = f"http://127.0.0.1:{emu.port('scorer', 8000)}/v1/score"
    return httpx.post(url, json=dict(body), headers={"X-API-Key": key}, timeout=30)


def test_docker_compose_up_emulated(emulation: Emulation) -> None:
    emu = emulation
    try:
        emu.up()
    finally:
        print("\n".join(f"{t:7.1f}s  {name:<18} {what}" for t, name, what in emu.timeline))
    data = emu.volumes["fraud-data"]

    # 1. A champion registered in MLflow, whose backend store is the Postgres service.
    from mlflow import MlflowClient

    from fraud.settings import ScorerSettings

    model_name = ScorerSettings.model_fields["scorer_model_name"].default
    client = MlflowClient(tracking_uri=f"http://127.0.0.1:{emu.port('mlflow', 5000)}")
    champion = client.get_model_version_by_alias(model_name, "champion")
    assert champion.version
    import psycopg2

    pg = cm.environment(emu.services["postgres"])
    with (
        psycopg2.connect(
            host="127.0.0.1",
            port=emu.port("postgres", 5432),
            user=pg["POSTGRES_USER"],
            password=pg["POSTGRES_PASSWORD"],
            dbname=pg["POSTGRES_DB"],
        ) as conn,
        conn.cursor() as cur,
    ):
        cur.execute("SELECT alias, version FROM registered_model_aliases WHERE name = %s", (model_name,))
        assert ("champion", int(champion.version)) in cur.fetchall()
    assert any(emu.volumes["mlflow-artifacts"].rglob("*")), "no artifact reached the served artifact store"

    # 2. Features in Redis, read back through Feast as the scorer would.
    import pandas as pd
    import redis

    from feature_repo.repo import ALL_VIEWS
    from fraud.settings import FeatureStoreSettings
    from fraud.store import online_features, open_store

    assert redis.Redis(host="127.0.0.1", port=emu.port("redis", 6379)).dbsize() > 0
    settings = FeatureStoreSettings(
        data_dir=data, feast_mode="compose", feast_redis_url=f"127.0.0.1:{emu.port('redis', 6379)}"
    )
    txns = pd.read_parquet(data / "simulated" / "transactions.parquet")
    store = open_store(settings)
    found = 0
    for view, (entity, features) in ALL_VIEWS.items():
        if entity.join_key in txns.columns:
            keys = txns[entity.join_key].dropna().astype(str).unique()[:20]
            rows = online_features(store, [{entity.join_key: k} for k in keys], view=view)
            found += int(rows[list(features)].notna().any(axis=1).sum())
    assert found > 0, "no online feature row in Redis for the simulated entities"

    # 3. The live stream went through ingest into the shared volume.
    from fraud import history

    deadline = time.monotonic() + min(60.0, emu.remaining())
    while not [p for p in history.parts(data, "transactions") if "-ingest-" in p.name]:
        assert time.monotonic() < deadline, "ingest wrote no micro-batch of the live stream\n" + emu.log_tail(
            emu.work / "logs" / "ingest.log"
        )
        time.sleep(1.0)

    # 4. The scorer answers with a decision (and the traffic generator is getting answers too).
    from services.traffic import transactions

    txn = next(transactions(users=50, seed=99))
    response = _scorer_request(emu, txn)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["decision"] in ("approve", "review", "decline")
    assert body["transaction_id"] == txn["transaction_id"]
    assert body["model_version"]
    import httpx

    anonymous = httpx.post(f"http://127.0.0.1:{emu.port('scorer', 8000)}/v1/score", json=txn, timeout=30)
    assert anonymous.status_code in (401, 403), "the scorer must refuse a request without an API key"
    traffic = next(p for p in emu.processes if p.name == "traffic")
    assert traffic.popen.poll() is None, "traffic stopped\n" + emu.log_tail(traffic.log)
