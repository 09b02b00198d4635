"""A real single-node Apache Kafka (KRaft) for local use: `learnstream broker start|stop|status`.

Everything lives in one data dir (normally $LEARNSTREAM_DATA_DIR/broker):
    broker.json          ports and cluster id chosen on the first start, reused afterwards
    server.properties    broker config, log4j2.properties its logging (rewritten on every start)
    kafka-data/          the topics (kept across stop/start)
    broker.pid           pid of the detached broker JVM; broker.lock serializes start/stop
    broker.log           the broker's log (rolled at 10 MB); broker.out the JVM's own stdout/stderr
"""

from __future__ import annotations

import base64
import fcntl
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypedDict

from ops.kafka_jars import JarsUnavailable, default_jar_cache, ensure_jars

logger = logging.getLogger(__name__)

HOST = "127.0.0.1"
READY_LINE = "Kafka Server started"
MAIN_CLASS = "kafka.Kafka"
JVM_OPTIONS = (
    # Small heap: a dev broker with a few topics needs little, and tests run beside other work.
    "-Xms128m",
    "-Xmx512m",
    # log4j's own shutdown hook would stop the log while Kafka's hook is still shutting down.
    "-Dlog4j2.shutdownHookEnabled=false",
)
# A clean single-node shutdown takes a few seconds; a JVM still alive after SIGTERM and this long is stuck.
STOP_TIMEOUT_S = 30
KILL_WAIT_S = 10
POLL_S = 0.2
LOG_TAIL_LINES = 30

# Per-partition and periodic INFO lines that drown the lifecycle messages of a dev broker.
QUIET_LOGGERS = (
    "state.change.logger",
    "kafka.cluster.Partition",
    "kafka.log.LogManager",
    "kafka.request.logger",
    "org.apache.kafka.storage.internals.log",
    "org.apache.kafka.coordinator.common.runtime.CoordinatorRuntime",
    "org.apache.kafka.controller.ReplicationControlManager",
    "org.apache.kafka.controller.EventPerformanceMonitor",
)


class BrokerState(TypedDict):
    """broker.json: chosen on the first start of a data dir and kept, so clients keep their address."""

    broker_port: int
    controller_port: int
    cluster_id: str


class BrokerError(RuntimeError):
    """The local broker could not be started or stopped; the message says why."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((HOST, 0))
        return probe.getsockname()[1]


def new_cluster_id() -> str:
    """A random Kafka cluster id: 22 characters of url-safe base64, no padding."""
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not cluster_id.startswith("-"):  # Kafka's own rule: it would read as a CLI flag
            return cluster_id


class LocalBroker:
    """One detached broker JVM per data dir; start/stop/status work from any process."""

    def __init__(self, data_dir: Path, *, jar_cache: Path | None = None) -> None:
        # Absolute, because the running broker is recognised by the config path on its command line.
        self.data_dir = Path(data_dir).resolve()
        self.jar_cache = jar_cache if jar_cache is not None else default_jar_cache()
        self._state_file = self.data_dir / "broker.json"
        self._pid_file = self.data_dir / "broker.pid"
        self._server_properties = self.data_dir / "server.properties"
        self._log4j_properties = self.data_dir / "log4j2.properties"
        self._kafka_data = self.data_dir / "kafka-data"
        self.log_file = self.data_dir / "broker.log"
        self._jvm_output = self.data_dir / "broker.out"

    @property
    def bootstrap(self) -> str:
        """host:port of the broker listener, fixed on the first start (BrokerError before it)."""
        return f"{HOST}:{self._load_state()['broker_port']}"

    def ensure_jars(self) -> Path:
        """The folder of broker jars, downloaded on the first call for this version."""
        try:
            return ensure_jars(self.jar_cache)
        except JarsUnavailable as exc:
            raise BrokerError(str(exc)) from exc  # callers of LocalBroker handle one error type

    def status(self) -> str | None:
        """The bootstrap address if the broker runs, else None."""
        return self.bootstrap if self._running_pid() is not None else None

    def start(self, *, timeout: float = 60) -> str:
        """Start the broker unless it runs already; return its bootstrap address once it serves."""
        with self._lock():
            address = self.status()
            if address is not None:
                return address
            java = shutil.which("java")
            if java is None:
                raise BrokerError("java not found: the local Kafka broker needs a Java 17+ runtime")
            jars = self.ensure_jars()
            state = self._load_or_create_state()
            for port in (state["broker_port"], state["controller_port"]):
                _require_port_free(port, self.data_dir)
            self._write_config(state)
            if not (self._kafka_data / "meta.properties").exists():
                self._format(java, jars, state["cluster_id"])
            return self._launch(java, jars, timeout)

    def stop(self, *, timeout: float = STOP_TIMEOUT_S) -> None:
        """Stop the broker (SIGTERM, then SIGKILL after `timeout`); its data is kept."""
        with self._lock():
            self._stop_unlocked(timeout)

    # -- state and config -------------------------------------------------------------------

    def _load_state(self) -> BrokerState:
        try:
            return json.loads(self._state_file.read_text())
        except FileNotFoundError:
            raise BrokerError(f"no local broker has been started in {self.data_dir}") from None

    def _load_or_create_state(self) -> BrokerState:
        if self._state_file.exists():
            return self._load_state()
        broker_port = free_port()
        controller_port = free_port()
        while controller_port == broker_port:
            controller_port = free_port()
        state = BrokerState(broker_port=broker_port, controller_port=controller_port, cluster_id=new_cluster_id())
        self.data_dir.mkdir(parents=True, exist_ok=True)
        staging = self._state_file.with_suffix(".tmp")
        staging.write_text(json.dumps(state, indent=2) + "\n")
        staging.rename(self._state_file)
        return state

    def _write_config(self, state: BrokerState) -> None:
        self._server_properties.write_text(self._server_config(state))
        self._log4j_properties.write_text(self._log4j_config())

    def _server_config(self, state: BrokerState) -> str:
        broker, controller = state["broker_port"], state["controller_port"]
        lines = [
            "process.roles=broker,controller",
            "node.id=1",
            f"controller.quorum.voters=1@{HOST}:{controller}",
            f"listeners=PLAINTEXT://{HOST}:{broker},CONTROLLER://{HOST}:{controller}",
            f"advertised.listeners=PLAINTEXT://{HOST}:{broker}",
            "controller.listener.names=CONTROLLER",
            "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "inter.broker.listener.name=PLAINTEXT",
            f"log.dirs={self._kafka_data}",
            # One node: internal topics cannot have more replicas than that, and their default 50
            # partitions (spread for many brokers) would only slow the first group join.
            "offsets.topic.replication.factor=1",
            "offsets.topic.num.partitions=1",
            "transaction.state.log.replication.factor=1",
            "transaction.state.log.min.isr=1",
            "transaction.state.log.num.partitions=1",
            "share.coordinator.state.topic.replication.factor=1",
            "share.coordinator.state.topic.min.isr=1",
            "share.coordinator.state.topic.num.partitions=1",
            # Consumers join at once instead of waiting 3 s for peers that a dev box rarely has.
            "group.initial.rebalance.delay.ms=0",
        ]
        return "\n".join(lines) + "\n"

    def _log4j_config(self) -> str:
        lines = [
            "status=warn",
            "appender.file.type=RollingFile",
            "appender.file.name=FILE",
            f"appender.file.fileName={self.log_file}",
            f"appender.file.filePattern={self.log_file}.%i",
            "appender.file.layout.type=PatternLayout",
            "appender.file.layout.pattern=[%d] %p %m (%c)%n",
            "appender.file.policies.type=Policies",
            "appender.file.policies.size.type=SizeBasedTriggeringPolicy",
            "appender.file.policies.size.size=10MB",
            "appender.file.strategy.type=DefaultRolloverStrategy",
            "appender.file.strategy.max=3",
            "rootLogger.level=INFO",
            "rootLogger.appenderRef.file.ref=FILE",
        ]
        for i, name in enumerate(QUIET_LOGGERS):
            lines += [f"logger.quiet{i}.name={name}", f"logger.quiet{i}.level=WARN"]
        return "\n".join(lines) + "\n"

    # -- the JVM ------------------------------------------------------------------------------

    def _java_command(self, java: str, jars: Path, main_class: str, *args: str) -> list[str]:
        log4j_config = f"-Dlog4j2.configurationFile={self._log4j_properties}"
        return [java, *JVM_OPTIONS, "-cp", str(jars / "*"), log4j_config, main_class, *args]

    def _format(self, java: str, jars: Path, cluster_id: str) -> None:
        logger.info("Formatting local Kafka storage in %s", self._kafka_data)
        command = self._java_command(
            java, jars, "kafka.tools.StorageTool", "format", "-t", cluster_id, "-c", str(self._server_properties)
        )
        result = subprocess.run(command, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise BrokerError(f"formatting Kafka storage failed:\n{_tail(result.stdout + result.stderr)}")

    def _launch(self, java: str, jars: Path, timeout: float) -> str:
        log_offset = self.log_file.stat().st_size if self.log_file.exists() else 0
        command = self._java_command(java, jars, MAIN_CLASS, str(self._server_properties))
        logger.info("Starting local Kafka %s in %s", self.bootstrap, self.data_dir)
        began = time.monotonic()
        # The shell backgrounds the JVM and exits at once, so the broker is no child of ours (nothing
        # to reap, it outlives this command); its own session keeps it clear of the terminal's Ctrl-C.
        # Until the background child execs java, its arguments are the shell's, which hold the same
        # command, so _running_pid() recognises it from the first poll.
        background = 'out=$1; shift; "$@" </dev/null >"$out" 2>&1 & echo $!'
        launcher = subprocess.run(
            ["/bin/sh", "-c", background, "sh", str(self._jvm_output), *command],
            cwd=self.data_dir,
            capture_output=True,
            text=True,
            check=True,
            start_new_session=True,
        )
        self._pid_file.write_text(launcher.stdout)
        while time.monotonic() - began < timeout:
            if self._running_pid() is None:
                self._pid_file.unlink(missing_ok=True)
                raise BrokerError(f"local Kafka exited before it was ready; its log ends with:\n{self._log_tail()}")
            if _log_contains(self.log_file, log_offset, READY_LINE):
                logger.info("Local Kafka ready at %s in %.1f s", self.bootstrap, time.monotonic() - began)
                return self.bootstrap
            time.sleep(POLL_S)
        self._stop_unlocked(STOP_TIMEOUT_S)
        raise BrokerError(f"local Kafka was not ready after {timeout:.0f} s; its log ends with:\n{self._log_tail()}")

    def _log_tail(self) -> str:
        texts = [path.read_text(errors="replace") for path in (self.log_file, self._jvm_output) if path.exists()]
        return _tail("\n".join(texts))

    # -- the running process -------------------------------------------------------------------

    def _running_pid(self) -> int | None:
        """The broker's pid, if the pid file names a live process running this data dir's broker."""
        try:
            pid = int(self._pid_file.read_text())
        except (FileNotFoundError, ValueError):
            return None
        # A stale pid file may name a reused pid: only a JVM with our config counts.
        arguments = _arguments(pid)
        if MAIN_CLASS in arguments and str(self._server_properties) in arguments:
            return pid
        return None

    def _stop_unlocked(self, timeout: float) -> None:
        pid = self._running_pid()
        if pid is not None:
            logger.info("Stopping local Kafka (pid %d)", pid)
            os.kill(pid, signal.SIGTERM)
            if not self._wait_exit(pid, timeout):
                logger.warning("Local Kafka ignored SIGTERM for %.0f s; killing it", timeout)
                os.kill(pid, signal.SIGKILL)
                self._wait_exit(pid, KILL_WAIT_S)
        self._pid_file.unlink(missing_ok=True)

    def _wait_exit(self, pid: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while self._running_pid() == pid:
            if time.monotonic() > deadline:
                return False
            time.sleep(POLL_S)
        return True

    @contextmanager
    def _lock(self) -> Iterator[None]:
        """Serialize start/stop across processes (e.g. `broker start` while `up` starts it too)."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with (self.data_dir / "broker.lock").open("w") as lock_file:
            fcntl.flock(lock_file, fcntl.LOCK_EX)
            yield


def _arguments(pid: int) -> list[str]:
    """The process's command line; empty if it is gone or a zombie."""
    try:
        raw = (Path("/proc") / str(pid) / "cmdline").read_bytes()
    except FileNotFoundError:
        return []
    return raw.decode(errors="replace").split("\0")


def _require_port_free(port: int, data_dir: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        # As the JVM does, so a port in TIME_WAIT from our own last run does not count as taken.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((HOST, port))
        except OSError as exc:
            raise BrokerError(
                f"port {port}, kept for the broker in {data_dir}, is used by another process ({exc.strerror})"
            ) from None


def _log_contains(path: Path, offset: int, needle: str) -> bool:
    try:
        with path.open("rb") as log:
            if log.seek(0, os.SEEK_END) < offset:
                offset = 0  # rolled over since the launch
            log.seek(offset)
            return needle.encode() in log.read()
    except FileNotFoundError:
        return False


def _tail(text: str) -> str:
    return "\n".join(text.strip().splitlines()[-LOG_TAIL_LINES:])


def broker_command(action: str, data_dir: Path) -> int:
    """`learnstream broker start|stop|status`; returns the exit code."""
    broker = LocalBroker(data_dir)
    try:
        if action == "start":
            print(broker.start())
            return 0
        if action == "stop":
            broker.stop()
            print("stopped")
            return 0
        if action == "status":
            address = broker.status()
            if address is None:
                print(f"not running (data dir {data_dir})", file=sys.stderr)
                return 1
            print(address)
            return 0
    except BrokerError as exc:
        print(f"learnstream broker {action}: {exc}", file=sys.stderr)
        return 1
    raise ValueError(f"unknown broker action {action!r}: expected start, stop or status")
