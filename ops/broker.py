"""A real Apache Kafka (KRaft) of one or more nodes for local use: `learnstream broker start [--nodes N]|stop|status`.

Everything lives in one data dir (normally $LEARNSTREAM_DATA_DIR/broker):
    broker.json          node count, ports and cluster id chosen on the first start, reused afterwards
    broker.lock          serializes start/stop of the whole cluster
Node 1 keeps its files in the data dir itself, node k > 1 in node-k/:
    server.properties    node config, log4j2.properties its logging (rewritten on every start)
    kafka-data/          the topics (kept across stop/start)
    broker.pid           pid of the detached node JVM
    broker.log           the node's log (rolled at 10 MB); broker.out the JVM's own stdout/stderr
Every node is broker and controller (a quorum of N voters), so a 3-node cluster survives losing any one node.
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
from dataclasses import dataclass
from pathlib import Path
from typing import TypedDict

from learnstream.topics import default_replication, min_insync
from ops.kafka_jars import JarsUnavailable, default_jar_cache, ensure_jars

logger = logging.getLogger(__name__)

HOST = "127.0.0.1"
READY_LINE = "Kafka Server started"
MAIN_CLASS = "kafka.Kafka"
JVM_OPTIONS = (
    # Small heap: a dev broker with a few topics needs little, and tests run beside other work (several nodes
    # on a shared 2-core box too).
    "-Xms128m",
    "-Xmx384m",
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


class NodePorts(TypedDict):
    id: int
    broker_port: int
    controller_port: int


class BrokerState(TypedDict):
    """broker.json: chosen on the first start of a data dir and kept, so clients keep their addresses."""

    cluster_id: str
    nodes: list[NodePorts]


class NodeStatus(TypedDict):
    """One node as `broker status --json` prints it."""

    id: int
    address: str
    pid: int | None
    running: bool


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


@dataclass(frozen=True)
class _Node:
    """The files of one node of the local cluster."""

    id: int
    dir: Path

    @property
    def pid_file(self) -> Path:
        return self.dir / "broker.pid"

    @property
    def server_properties(self) -> Path:
        return self.dir / "server.properties"

    @property
    def log4j_properties(self) -> Path:
        return self.dir / "log4j2.properties"

    @property
    def kafka_data(self) -> Path:
        return self.dir / "kafka-data"

    @property
    def log_file(self) -> Path:
        return self.dir / "broker.log"

    @property
    def jvm_output(self) -> Path:
        return self.dir / "broker.out"

    def running_pid(self) -> int | None:
        """The node's pid, if the pid file names a live process running this node's config."""
        try:
            pid = int(self.pid_file.read_text())
        except (FileNotFoundError, ValueError):
            return None
        # A stale pid file may name a reused pid: only a JVM with our config counts.
        arguments = _arguments(pid)
        if MAIN_CLASS in arguments and str(self.server_properties) in arguments:
            return pid
        return None


class LocalBroker:
    """Detached node JVMs of one data dir (one node unless started with nodes=N); start/stop/status work from any
    process."""

    def __init__(self, data_dir: Path, *, jar_cache: Path | None = None) -> None:
        # Absolute, because the running broker is recognised by the config path on its command line.
        self.data_dir = Path(data_dir).resolve()
        self.jar_cache = jar_cache if jar_cache is not None else default_jar_cache()
        self._state_file = self.data_dir / "broker.json"

    def _node(self, node_id: int) -> _Node:
        return _Node(node_id, self.data_dir if node_id == 1 else self.data_dir / f"node-{node_id}")

    @property
    def log_file(self) -> Path:
        """Node 1's log."""
        return self._node(1).log_file

    @property
    def bootstrap(self) -> str:
        """host:port of every node's broker listener, comma-separated, fixed on the first start (BrokerError before)."""
        return ",".join(f"{HOST}:{n['broker_port']}" for n in self._load_state()["nodes"])

    def nodes(self) -> list[NodeStatus]:
        """Every node with its address and whether it runs (empty before the first start)."""
        if not self._state_file.exists():
            return []
        result = []
        for ports in self._load_state()["nodes"]:
            pid = self._node(ports["id"]).running_pid()
            result.append(NodeStatus(id=ports["id"], address=f"{HOST}:{ports['broker_port']}", pid=pid,
                                     running=pid is not None))
        return result

    def ensure_jars(self) -> Path:
        """The folder of broker jars, downloaded on the first call for this version."""
        try:
            return ensure_jars(self.jar_cache)
        except JarsUnavailable as exc:
            raise BrokerError(str(exc)) from exc  # callers of LocalBroker handle one error type

    def status(self) -> str | None:
        """The bootstrap list if any node runs (clients find the running ones through it), else None."""
        return self.bootstrap if any(n["running"] for n in self.nodes()) else None

    def start(self, *, nodes: int | None = None, timeout: float = 60) -> str:
        """Start every node that is not running (all on their old ports and data; `nodes` fixes the node count on
        the first start, default 1); return the bootstrap list once every node serves."""
        with self._lock():
            state = self._load_or_create_state(nodes)
            if nodes is not None and nodes != len(state["nodes"]):
                raise BrokerError(f"the local broker in {self.data_dir} has {len(state['nodes'])} node(s), not "
                                  f"{nodes}: its controller quorum is fixed (stop it and use another data dir)")
            down = [self._node(p["id"]) for p in state["nodes"] if self._node(p["id"]).running_pid() is None]
            if not down:
                return self.bootstrap
            java = shutil.which("java")
            if java is None:
                raise BrokerError("java not found: the local Kafka broker needs a Java 17+ runtime")
            jars = self.ensure_jars()
            ports = {p["id"]: p for p in state["nodes"]}
            for node in down:
                for port in (ports[node.id]["broker_port"], ports[node.id]["controller_port"]):
                    _require_port_free(port, self.data_dir)
            for node in down:
                node.dir.mkdir(parents=True, exist_ok=True)
                node.server_properties.write_text(self._server_config(state, node))
                node.log4j_properties.write_text(self._log4j_config(node))
                if not (node.kafka_data / "meta.properties").exists():
                    self._format(java, jars, node, state["cluster_id"])
            # All down nodes at once: with several voters none is ready before a quorum of them runs.
            launches = [(node, self._spawn(java, jars, node)) for node in down]
            # Several JVMs starting together on a small box share its cores: allow each its own timeout.
            deadline = time.monotonic() + timeout * len(down)
            for node, log_offset in launches:
                self._wait_ready(node, log_offset, deadline, timeout * len(down))
            logger.info("Local Kafka ready at %s", self.bootstrap)
            return self.bootstrap

    def stop(self, *, node: int | None = None, timeout: float = STOP_TIMEOUT_S) -> None:
        """Stop every node, or only `node` (SIGTERM, then SIGKILL after `timeout`); the data is kept."""
        with self._lock():
            if node is not None:
                if node not in {p["id"] for p in self._load_state()["nodes"]}:
                    raise BrokerError(f"the local broker in {self.data_dir} has no node {node}")
                self._stop_unlocked([self._node(node)], timeout)
            elif self._state_file.exists():
                self._stop_unlocked([self._node(p["id"]) for p in self._load_state()["nodes"]], timeout)

    # -- state and config -------------------------------------------------------------------

    def _load_state(self) -> BrokerState:
        try:
            state = json.loads(self._state_file.read_text())
        except FileNotFoundError:
            raise BrokerError(f"no local broker has been started in {self.data_dir}") from None
        if "nodes" not in state:  # a single-node broker.json from before clusters: it is node 1
            ports = NodePorts(id=1, broker_port=state["broker_port"], controller_port=state["controller_port"])
            state = BrokerState(cluster_id=state["cluster_id"], nodes=[ports])
        return state

    def _load_or_create_state(self, nodes: int | None) -> BrokerState:
        if self._state_file.exists():
            return self._load_state()
        count = 1 if nodes is None else nodes
        if count < 1:
            raise BrokerError(f"a cluster needs at least 1 node, not {count}")
        chosen: set[int] = set()
        while len(chosen) < 2 * count:
            chosen.add(free_port())
        ports = sorted(chosen)
        state = BrokerState(cluster_id=new_cluster_id(), nodes=[
            NodePorts(id=k + 1, broker_port=ports[2 * k], controller_port=ports[2 * k + 1]) for k in range(count)])
        self.data_dir.mkdir(parents=True, exist_ok=True)
        staging = self._state_file.with_suffix(".tmp")
        staging.write_text(json.dumps(state, indent=2) + "\n")
        staging.rename(self._state_file)
        return state

    def _server_config(self, state: BrokerState, node: _Node) -> str:
        ports = {p["id"]: p for p in state["nodes"]}
        broker, controller = ports[node.id]["broker_port"], ports[node.id]["controller_port"]
        voters = ",".join(f"{p['id']}@{HOST}:{p['controller_port']}" for p in state["nodes"])
        replicas = default_replication(len(state["nodes"]))
        lines = [
            "process.roles=broker,controller",
            f"node.id={node.id}",
            f"controller.quorum.voters={voters}",
            f"listeners=PLAINTEXT://{HOST}:{broker},CONTROLLER://{HOST}:{controller}",
            f"advertised.listeners=PLAINTEXT://{HOST}:{broker}",
            "controller.listener.names=CONTROLLER",
            "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "inter.broker.listener.name=PLAINTEXT",
            f"log.dirs={node.kafka_data}",
            # Internal topics on up to 3 nodes, writable with one of them down. Their default 50 partitions
            # (spread for many brokers) would only slow the first group join on a dev box.
            f"offsets.topic.replication.factor={replicas}",
            "offsets.topic.num.partitions=1",
            f"transaction.state.log.replication.factor={replicas}",
            f"transaction.state.log.min.isr={min_insync(replicas)}",
            "transaction.state.log.num.partitions=1",
            f"share.coordinator.state.topic.replication.factor={replicas}",
            f"share.coordinator.state.topic.min.isr={min_insync(replicas)}",
            "share.coordinator.state.topic.num.partitions=1",
            # Topics created without explicit settings (auto-created ones) follow the same rule.
            f"default.replication.factor={replicas}",
            f"min.insync.replicas={min_insync(replicas)}",
            # Consumers join at once instead of waiting 3 s for peers that a dev box rarely has.
            "group.initial.rebalance.delay.ms=0",
        ]
        return "\n".join(lines) + "\n"

    def _log4j_config(self, node: _Node) -> str:
        lines = [
            "status=warn",
            "appender.file.type=RollingFile",
            "appender.file.name=FILE",
            f"appender.file.fileName={node.log_file}",
            f"appender.file.filePattern={node.log_file}.%i",
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

    def _java_command(self, java: str, jars: Path, node: _Node, main_class: str, *args: str) -> list[str]:
        log4j_config = f"-Dlog4j2.configurationFile={node.log4j_properties}"
        return [java, *JVM_OPTIONS, "-cp", str(jars / "*"), log4j_config, main_class, *args]

    def _format(self, java: str, jars: Path, node: _Node, cluster_id: str) -> None:
        logger.info("Formatting local Kafka storage in %s", node.kafka_data)
        command = self._java_command(
            java, jars, node, "kafka.tools.StorageTool", "format", "-t", cluster_id, "-c", str(node.server_properties)
        )
        result = subprocess.run(command, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise BrokerError(f"formatting Kafka storage failed:\n{_tail(result.stdout + result.stderr)}")

    def _spawn(self, java: str, jars: Path, node: _Node) -> int:
        """Launch the node's JVM detached; returns the offset in its log from which to look for the ready line."""
        log_offset = node.log_file.stat().st_size if node.log_file.exists() else 0
        command = self._java_command(java, jars, node, MAIN_CLASS, str(node.server_properties))
        logger.info("Starting local Kafka node %d in %s", node.id, node.dir)
        # The shell backgrounds the JVM and exits at once, so the broker is no child of ours (nothing
        # to reap, it outlives this command); its own session keeps it clear of the terminal's Ctrl-C.
        # Until the background child execs java, its arguments are the shell's, which hold the same
        # command, so running_pid() recognises it from the first poll.
        background = 'out=$1; shift; "$@" </dev/null >"$out" 2>&1 & echo $!'
        launcher = subprocess.run(
            ["/bin/sh", "-c", background, "sh", str(node.jvm_output), *command],
            cwd=node.dir,
            capture_output=True,
            text=True,
            check=True,
            start_new_session=True,
        )
        node.pid_file.write_text(launcher.stdout)
        return log_offset

    def _wait_ready(self, node: _Node, log_offset: int, deadline: float, timeout: float) -> None:
        while time.monotonic() < deadline:
            if node.running_pid() is None:
                node.pid_file.unlink(missing_ok=True)
                raise BrokerError(f"local Kafka node {node.id} exited before it was ready; its log ends with:\n"
                                  f"{_log_tail(node)}")
            if _log_contains(node.log_file, log_offset, READY_LINE):
                logger.info("Local Kafka node %d ready", node.id)
                return
            time.sleep(POLL_S)
        self._stop_unlocked([node], STOP_TIMEOUT_S)
        raise BrokerError(f"local Kafka node {node.id} was not ready after {timeout:.0f} s; its log ends with:\n"
                          f"{_log_tail(node)}")

    # -- the running processes -----------------------------------------------------------------

    def _stop_unlocked(self, nodes: list[_Node], timeout: float) -> None:
        # SIGTERM to all first: nodes shut down together, and none waits out the others' timeouts.
        pids = {}
        for node in nodes:
            pid = node.running_pid()
            if pid is not None:
                logger.info("Stopping local Kafka node %d (pid %d)", node.id, pid)
                os.kill(pid, signal.SIGTERM)
                pids[node] = pid
        deadline = time.monotonic() + timeout
        for node, pid in pids.items():
            if not _wait_exit(node, pid, deadline):
                logger.warning("Local Kafka node %d ignored SIGTERM for %.0f s; killing it", node.id, timeout)
                os.kill(pid, signal.SIGKILL)
                _wait_exit(node, pid, time.monotonic() + KILL_WAIT_S)
        for node in nodes:
            node.pid_file.unlink(missing_ok=True)

    @contextmanager
    def _lock(self) -> Iterator[None]:
        """Serialize start/stop across processes (e.g. `broker start` while `up` starts it too)."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with (self.data_dir / "broker.lock").open("w") as lock_file:
            fcntl.flock(lock_file, fcntl.LOCK_EX)
            yield


def _wait_exit(node: _Node, pid: int, deadline: float) -> bool:
    while node.running_pid() == pid:
        if time.monotonic() > deadline:
            return False
        time.sleep(POLL_S)
    return True


def _log_tail(node: _Node) -> str:
    texts = [path.read_text(errors="replace") for path in (node.log_file, node.jvm_output) if path.exists()]
    return _tail("\n".join(texts))


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


def broker_command(action: str, data_dir: Path, *, nodes: int | None = None, node: int | None = None,
                   as_json: bool = False) -> int:
    """`learnstream broker start [--nodes N]|stop [--node ID]|status [--json]`; returns the exit code."""
    broker = LocalBroker(data_dir)
    try:
        if action == "start":
            print(broker.start(nodes=nodes))  # the last line: the bootstrap list
            return 0
        if action == "stop":
            broker.stop(node=node)
            print("stopped" if node is None else f"stopped node {node}")
            return 0
        if action == "status":
            states = broker.nodes()
            if as_json:
                print(json.dumps({"nodes": states}))
            down = [str(n["id"]) for n in states if not n["running"]]
            if not states or len(down) == len(states):
                print(f"not running (data dir {data_dir})", file=sys.stderr)
                return 1
            if not as_json:
                print(broker.bootstrap)
            if down:
                print(f"node(s) {', '.join(down)} not running (data dir {data_dir})", file=sys.stderr)
                return 1
            return 0
    except BrokerError as exc:
        print(f"learnstream broker {action}: {exc}", file=sys.stderr)
        return 1
    raise ValueError(f"unknown broker action {action!r}: expected start, stop or status")
