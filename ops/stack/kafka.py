"""A single-node Apache Kafka (KRaft: broker and controller in one JVM) run from Maven Central jars.

Contract:
- `fetch_kafka()` resolves `org.apache.kafka:kafka_2.13:<KAFKA_VERSION>` and its runtime
  dependencies with Maven into a cache outside git, once; concurrent callers wait on a file lock.
- `KafkaNode.start()` formats the storage on first use, starts `kafka.Kafka` detached from the
  caller (so `payments stack up` can exit and leave it running), and returns only when the broker
  answers metadata requests. Calling it while the node runs is a no-op; after a crash (stale pid
  file) it starts the node again on the same log directory, which Kafka recovers.
- `KafkaNode.stop()` sends SIGTERM (controlled shutdown) and escalates to SIGKILL after a bound.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path

from confluent_kafka.admin import AdminClient

from ops.errors import StackError
from ops.stack.process import FileLock, ProcessHandle, wait_until

KAFKA_VERSION = "4.1.1"
SCALA_VERSION = "2.13"
LOG4J_VERSION = "2.24.3"
SLF4J_VERSION = "2.0.16"
MAVEN_FETCH_TIMEOUT_S = 900
START_TIMEOUT_S = 90
STOP_TIMEOUT_S = 45
JVM_HEAP = "-Xmx768m"

_POM = f"""<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>local.payments</groupId><artifactId>kafka-runtime</artifactId><version>1</version>
  <dependencies>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka_{SCALA_VERSION}</artifactId>
      <version>{KAFKA_VERSION}</version></dependency>
    <dependency><groupId>org.slf4j</groupId><artifactId>slf4j-api</artifactId>
      <version>{SLF4J_VERSION}</version></dependency>
    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-slf4j2-impl</artifactId>
      <version>{LOG4J_VERSION}</version></dependency>
    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-core</artifactId>
      <version>{LOG4J_VERSION}</version></dependency>
  </dependencies>
</project>
"""

# Kafka logs WARN and above, plus the start/stop lines an operator looks for.
_LOG4J2 = """Configuration:
  Appenders:
    Console:
      name: STDOUT
      PatternLayout:
        Pattern: "[%d] %p %m (%c)%n"
  Loggers:
    Root:
      level: WARN
      AppenderRef:
        - ref: STDOUT
    Logger:
      - name: kafka.server.KafkaRaftServer
        level: INFO
"""


def default_cache_dir() -> Path:
    """Where downloaded jars live by default: outside git, shared by every clone on the machine
    (`PAYMENTS_CACHE_DIR` overrides it, see ops.settings)."""
    return Path(os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")) / "payments-orchestrator"


def fetch_kafka(cache_dir: Path | None = None) -> Path:
    """Return the directory holding Kafka's runtime jars, fetching them with Maven on first use."""
    libs = (cache_dir or default_cache_dir()) / f"kafka_{SCALA_VERSION}-{KAFKA_VERSION}" / "libs"
    done_marker = libs.parent / ".complete"
    if done_marker.exists():
        return libs
    libs.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(libs.parent / ".fetch.lock"):
        if done_marker.exists():  # another process fetched while we waited
            return libs
        if shutil.which("mvn") is None:
            raise StackError("Maven (mvn) is not on PATH: it is needed to fetch Kafka from Maven Central")
        with tempfile.TemporaryDirectory(prefix="kafka-fetch-") as work:
            (Path(work) / "pom.xml").write_text(_POM)
            staging = Path(work) / "libs"
            command = ["mvn", "-q", "-B", "dependency:copy-dependencies", "-DincludeScope=runtime",
                       f"-DoutputDirectory={staging}"]
            result = subprocess.run(command, cwd=work, capture_output=True, text=True,
                                    timeout=MAVEN_FETCH_TIMEOUT_S, check=False)
            if result.returncode != 0:
                raise StackError(f"{' '.join(command)} failed ({result.returncode}):\n"
                                 f"{result.stdout[-4000:]}{result.stderr[-4000:]}")
            if libs.exists():
                shutil.rmtree(libs)
            shutil.move(str(staging), libs)
        done_marker.write_text(KAFKA_VERSION + "\n")
    return libs


@dataclass(frozen=True)
class KafkaNode:
    """One KRaft node whose files (config, logs, pid) all live under `home`."""

    home: Path
    port: int = 19092
    controller_port: int = 19093
    partitions_default: int = 4
    jar_cache: Path | None = None  # default: default_cache_dir()

    @property
    def bootstrap_servers(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def _handle(self) -> ProcessHandle:
        return ProcessHandle(self.home / "kafka.pid", marker="kafka.Kafka")

    def is_running(self) -> bool:
        return self._handle.alive() is not None

    def pid(self) -> int | None:
        """The broker's process id while it runs."""
        process = self._handle.alive()
        return None if process is None else int(process.pid)

    def start(self) -> None:
        if self.is_running():
            wait_until(self._answers, START_TIMEOUT_S, "Kafka to answer metadata requests")
            return
        libs = fetch_kafka(self.jar_cache)
        self.home.mkdir(parents=True, exist_ok=True)
        props = self._write_config()
        java = ["java", JVM_HEAP, "-cp", f"{libs}/*",
                f"-Dlog4j2.configurationFile={self.home / 'log4j2.yaml'}"]
        if not (self.home / "data" / "meta.properties").exists():
            cluster_id = uuid.uuid4().hex[:22]
            subprocess.run([*java, "kafka.tools.StorageTool", "format", "-t", cluster_id, "-c", str(props),
                            "--ignore-formatted"],
                           check=True, capture_output=True, timeout=120)
        child = self._handle.spawn([*java, "-XX:+UseG1GC", "kafka.Kafka", str(props)], log=self.home / "kafka.log")
        try:
            wait_until(self._answers, START_TIMEOUT_S, "Kafka to answer metadata requests",
                       abort_if=lambda: child.poll() is not None)
        except StackError as error:
            raise StackError(f"{error}; see {self.home / 'kafka.log'}:\n{self._log_tail()}") from error

    def stop(self) -> None:
        self._handle.terminate(STOP_TIMEOUT_S)

    def kill(self) -> None:
        """SIGKILL, as a crash would: for recovery tests."""
        self._handle.kill()

    def _answers(self) -> bool:
        with socket.socket() as probe:  # cheap check first: keeps librdkafka's connect errors out of the log
            if probe.connect_ex(("127.0.0.1", self.port)) != 0:
                return False
        admin = AdminClient({"bootstrap.servers": self.bootstrap_servers, "socket.timeout.ms": 2000,
                             "log_level": 2})
        try:
            metadata = admin.list_topics(timeout=2)
        except Exception:  # any failure here only means "not ready yet"
            return False
        return bool(metadata.brokers)

    def _log_tail(self) -> str:
        log = self.home / "kafka.log"
        return log.read_text(errors="replace")[-3000:] if log.exists() else "(no log)"

    def _write_config(self) -> Path:
        (self.home / "log4j2.yaml").write_text(_LOG4J2)
        props = self.home / "server.properties"
        props.write_text("\n".join([
            "process.roles=broker,controller",
            "node.id=1",
            f"controller.quorum.voters=1@127.0.0.1:{self.controller_port}",
            f"listeners=PLAINTEXT://127.0.0.1:{self.port},CONTROLLER://127.0.0.1:{self.controller_port}",
            f"advertised.listeners=PLAINTEXT://127.0.0.1:{self.port}",
            "controller.listener.names=CONTROLLER",
            "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "inter.broker.listener.name=PLAINTEXT",
            f"log.dirs={self.home / 'data'}",
            f"num.partitions={self.partitions_default}",
            # One node: every internal topic has a single replica.
            "offsets.topic.replication.factor=1",
            "offsets.topic.num.partitions=4",
            "transaction.state.log.replication.factor=1",
            "transaction.state.log.min.isr=1",
            "transaction.state.log.num.partitions=4",
            "share.coordinator.state.topic.replication.factor=1",
            "share.coordinator.state.topic.min.isr=1",
            # Tests and the demo start consumers right away: no initial rebalance delay.
            "group.initial.rebalance.delay.ms=0",
            # Topics are declared by the project (payments.runtime.topics), never created by accident.
            "auto.create.topics.enable=false",
            "log.retention.hours=-1",
            "",
        ]))
        return props

