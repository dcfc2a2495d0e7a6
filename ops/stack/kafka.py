"""A single-node Apache Kafka (KRaft: broker and controller in one JVM) run from Maven Central jars.

Contract:
- `fetch_kafka()` resolves `org.apache.kafka:kafka_2.13:<KAFKA_VERSION>` and its runtime
  dependencies with Maven into a cache outside git, once; concurrent callers wait on a file lock.
- `KafkaNode.start()` formats the storage on first use, starts `kafka.Kafka` detached from the
  caller (so `payments stack up` can exit and leave it running), and returns only when the broker
  answers metadata requests. Calling it while the node runs is a no-op; after a crash (stale pid
  file) it starts the node again on the same log directory, which Kafka recovers.
- `KafkaNode.stop()` sends SIGTERM (controlled shutdown) and escalates to SIGKILL after a bound.
- `KafkaCluster` runs several such nodes as one KRaft cluster (every node a broker and a voter),
  formatted with one cluster id, with replication factor `size` and `min.insync.replicas` size - 1
  for every topic and internal topic: the chaos run's cluster (tests/chaos), where a broker dies.
- `KafkaNode(..., secure=SecureListener(...))` serves clients on SASL_SSL only: TLS with a client
  certificate required (mutual TLS) and SASL/SCRAM-SHA-512, the users made when the storage is formatted,
  the standard authorizer denying whatever no ACL allows (docs/security.md). The default is PLAINTEXT.
"""

from __future__ import annotations

import base64
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path

from confluent_kafka.admin import AdminClient

from ops.errors import StackError
from ops.stack.process import FileLock, ProcessHandle, wait_until
from ops.stack.tls import BrokerKeystore, ClientCertificate
from payments.runtime.connection import KafkaConnection, KafkaSecurity, client_config

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
class SecureListener:
    """The client listener as SASL_SSL with mutual TLS, SCRAM-SHA-512 and ACLs (a test broker's, ops.stack.tls).

    `admin` is the super user, also the broker's own principal on its inter-broker connections (through this
    listener); `users` are the other SCRAM users, name to password, made at format time with the admin. The
    controller listener stays PLAINTEXT on loopback: its principal (User:ANONYMOUS) is a super user too, as a
    combined node's controller authorizes the broker's own registration and heartbeats with it."""

    keystore: BrokerKeystore
    ca: Path
    admin_password: str
    admin_certificate: ClientCertificate  # the admin client's (and the readiness probe's) certificate
    users: tuple[tuple[str, str], ...] = ()
    admin: str = "admin"

    def connection(self, bootstrap_servers: str, user: str, password: str,
                   certificate: ClientCertificate | None) -> KafkaConnection:
        """A client's connection to the listener as `user` (no `certificate`: TLS without a client certificate)."""
        return KafkaConnection(bootstrap_servers, KafkaSecurity(
            protocol="SASL_SSL", sasl_username=user, sasl_password=password, ssl_ca_location=str(self.ca),
            ssl_certificate_location=None if certificate is None else str(certificate.certificate),
            ssl_key_location=None if certificate is None else str(certificate.key)))

    def properties(self, listener: str) -> list[str]:
        scram = "org.apache.kafka.common.security.scram.ScramLoginModule"
        prefix = f"listener.name.{listener.lower()}"
        return [
            "sasl.enabled.mechanisms=SCRAM-SHA-512",
            "sasl.mechanism.inter.broker.protocol=SCRAM-SHA-512",
            f'{prefix}.scram-sha-512.sasl.jaas.config={scram} required username="{self.admin}" '
            f'password="{self.admin_password}";',
            f"{prefix}.ssl.client.auth=required",
            "ssl.keystore.type=PKCS12",
            f"ssl.keystore.location={self.keystore.path}",
            f"ssl.keystore.password={self.keystore.password}",
            f"ssl.key.password={self.keystore.password}",
            "ssl.truststore.type=PEM",
            f"ssl.truststore.location={self.ca}",
            "ssl.endpoint.identification.algorithm=https",
            "authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer",
            f"super.users=User:{self.admin};User:ANONYMOUS",
            "allow.everyone.if.no.acl.found=false",
        ]

    def scram_arguments(self) -> list[str]:
        """`kafka-storage format` arguments that make every user (KIP-900)."""
        users = [(self.admin, self.admin_password), *self.users]
        return [arg for name, password in users
                for arg in ("--add-scram", f"SCRAM-SHA-512=[name={name},password={password}]")]


@dataclass(frozen=True)
class KafkaNode:
    """One KRaft node whose files (config, logs, pid) all live under `home`."""

    home: Path
    port: int = 19092
    controller_port: int = 19093
    partitions_default: int = 4
    jar_cache: Path | None = None  # default: default_cache_dir()
    # A member of a KafkaCluster: its node id, every voter ("1@host:port,..."), the cluster id to format with,
    # and the replication of every topic. The defaults are the single node.
    node_id: int = 1
    voters: str | None = None
    cluster_id: str | None = None
    replicas: int = 1
    jvm_options: tuple[str, ...] = (JVM_HEAP,)
    secure: SecureListener | None = None  # None: clients connect on PLAINTEXT

    @property
    def bootstrap_servers(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def admin_connection(self) -> KafkaConnection:
        """How a super user reaches this node (PLAINTEXT unless it is secured)."""
        if self.secure is None:
            return KafkaConnection(self.bootstrap_servers)
        return self.secure.connection(self.bootstrap_servers, self.secure.admin, self.secure.admin_password,
                                      self.secure.admin_certificate)

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
        self.wait_ready(self.spawn())

    def spawn(self) -> subprocess.Popen[bytes] | None:
        """Start the JVM without waiting for it to answer (None: it runs already). A cluster's nodes are all
        spawned first: none answers before a majority of the voters runs."""
        if self.is_running():
            return None
        libs = fetch_kafka(self.jar_cache)
        self.home.mkdir(parents=True, exist_ok=True)
        props = self._write_config()
        java = ["java", *self.jvm_options, "-cp", f"{libs}/*",
                f"-Dlog4j2.configurationFile={self.home / 'log4j2.yaml'}"]
        if not (self.home / "data" / "meta.properties").exists():
            cluster_id = self.cluster_id or uuid.uuid4().hex[:22]
            scram = self.secure.scram_arguments() if self.secure else []
            subprocess.run([*java, "kafka.tools.StorageTool", "format", "-t", cluster_id, "-c", str(props),
                            "--ignore-formatted", *scram],
                           check=True, capture_output=True, timeout=120)
        return self._handle.spawn([*java, "-XX:+UseG1GC", "kafka.Kafka", str(props)], log=self.home / "kafka.log")

    def wait_ready(self, child: subprocess.Popen[bytes] | None = None) -> None:
        """Wait until the node answers metadata requests (or `child`, the JVM just spawned, exits)."""
        try:
            wait_until(self._answers, START_TIMEOUT_S, "Kafka to answer metadata requests",
                       abort_if=None if child is None else (lambda: child.poll() is not None))
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
        admin = AdminClient(client_config(self.admin_connection, {"socket.timeout.ms": 2000, "log_level": 2}))
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
        replicas, min_isr = self.replicas, max(1, self.replicas - 1)
        listener, protocol = ("SECURE", "SASL_SSL") if self.secure else ("PLAINTEXT", "PLAINTEXT")
        props.write_text("\n".join([
            "process.roles=broker,controller",
            f"node.id={self.node_id}",
            f"controller.quorum.voters={self.voters or f'{self.node_id}@127.0.0.1:{self.controller_port}'}",
            f"listeners={listener}://127.0.0.1:{self.port},CONTROLLER://127.0.0.1:{self.controller_port}",
            f"advertised.listeners={listener}://127.0.0.1:{self.port}",
            "controller.listener.names=CONTROLLER",
            f"listener.security.protocol.map={listener}:{protocol},CONTROLLER:PLAINTEXT",
            f"inter.broker.listener.name={listener}",
            *(self.secure.properties(listener) if self.secure else []),
            f"log.dirs={self.home / 'data'}",
            f"num.partitions={self.partitions_default}",
            # Every topic, internal ones included, on `replicas` nodes; a write (acks=all) needs all but one of
            # them in sync. One node: a single replica. Three: a write survives one node lost.
            f"default.replication.factor={replicas}",
            f"min.insync.replicas={min_isr}",
            "unclean.leader.election.enable=false",
            f"offsets.topic.replication.factor={replicas}",
            "offsets.topic.num.partitions=4",
            f"transaction.state.log.replication.factor={replicas}",
            f"transaction.state.log.min.isr={min_isr}",
            "transaction.state.log.num.partitions=4",
            f"share.coordinator.state.topic.replication.factor={replicas}",
            f"share.coordinator.state.topic.min.isr={min_isr}",
            # Tests and the demo start consumers right away: no initial rebalance delay.
            "group.initial.rebalance.delay.ms=0",
            # Topics are declared by the project (payments.runtime.topics), never created by accident.
            "auto.create.topics.enable=false",
            "log.retention.hours=-1",
            "",
        ]))
        return props



@dataclass(frozen=True)
class KafkaCluster:
    """`size` KRaft nodes, each a broker and a controller voter, under `home/node-<id>`; every topic has
    `size` replicas and `min.insync.replicas` size - 1. Ports are given per node (broker, controller)."""

    home: Path
    ports: tuple[tuple[int, int], ...]  # (broker port, controller port) per node, node ids from 1
    jar_cache: Path | None = None
    # C1 only: a node (re)started on a busy machine is serving again sooner, without C2's compile threads.
    jvm_options: tuple[str, ...] = ("-Xmx512m", "-XX:TieredStopAtLevel=1")

    @property
    def nodes(self) -> list[KafkaNode]:
        voters = ",".join(f"{i}@127.0.0.1:{controller}" for i, (_, controller) in enumerate(self.ports, start=1))
        cluster_id = self._cluster_id()
        return [KafkaNode(self.home / f"node-{i}", port=port, controller_port=controller, jar_cache=self.jar_cache,
                          node_id=i, voters=voters, cluster_id=cluster_id, replicas=len(self.ports),
                          jvm_options=self.jvm_options)
                for i, (port, controller) in enumerate(self.ports, start=1)]

    @property
    def bootstrap_servers(self) -> str:
        return ",".join(node.bootstrap_servers for node in self.nodes)

    def node(self, node_id: int) -> KafkaNode:
        return self.nodes[node_id - 1]

    def start(self) -> None:
        """Spawn every node, then wait for each to answer (none does before a majority of voters runs)."""
        spawned = [(node, node.spawn()) for node in self.nodes]
        for node, child in spawned:
            node.wait_ready(child)

    def stop(self) -> None:
        """Every node at once (a controlled shutdown each, SIGKILL past its bound)."""
        stopping = [threading.Thread(target=node.stop) for node in self.nodes]
        for thread in stopping:
            thread.start()
        for thread in stopping:
            thread.join()

    def _cluster_id(self) -> str:
        """One id for every node, kept beside them so a restarted cluster keeps it."""
        path = self.home / "cluster.id"
        if not path.exists():
            self.home.mkdir(parents=True, exist_ok=True)
            cluster_id = "-"
            while cluster_id.startswith("-"):  # StorageTool would read "-t -x..." as an option (so does Kafka's Uuid)
                cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
            path.write_text(cluster_id + "\n")
        return path.read_text().strip()
