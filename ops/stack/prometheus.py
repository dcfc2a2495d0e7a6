"""Prometheus and promtool from Debian's `prometheus` package, fetched into the cache on first use.

For tests and local runs only (the alert rules' `promtool test rules`, a real server scraping a running
stack). The package is downloaded with `apt-get download` and unpacked with `dpkg-deb -x` into the
user's cache directory: nothing is installed system-wide, and no root is needed. Both binaries are
static Go programs; the package's other dependencies are only the web UI's JavaScript.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from ops.errors import StackError
from ops.stack.kafka import default_cache_dir
from ops.stack.process import fetch_once, run_checked, wait_until

PACKAGE = "prometheus"
FETCH_TIMEOUT_S = 300


def fetch_prometheus(cache_dir: Path | None = None) -> Path:
    """The directory holding `prometheus` and `promtool`, fetched from Debian's packages on first use."""
    home = (cache_dir or default_cache_dir()) / "prometheus-deb"
    bin_dir = home / "usr" / "bin"
    done_marker = home / ".complete"

    def fetch() -> None:
        for tool in ("apt-get", "dpkg-deb"):
            if shutil.which(tool) is None:
                raise StackError(f"{tool} is not on PATH: Prometheus is fetched from Debian's packages "
                                 f"(or install Prometheus 2.x yourself and put it on PATH)")
        with tempfile.TemporaryDirectory(prefix="prometheus-fetch-") as work:
            _run(["apt-get", "download", PACKAGE], cwd=work)
            debs = sorted(Path(work).glob(f"{PACKAGE}_*.deb"))
            if not debs:
                raise StackError(f"apt-get download {PACKAGE} left no .deb in {work}")
            staging = Path(work) / "root"
            _run(["dpkg-deb", "-x", str(debs[-1]), str(staging)], cwd=work)
            if home.exists():
                shutil.rmtree(home)
            shutil.move(str(staging), home)
        done_marker.write_text(debs[-1].name + "\n")

    fetch_once(done_marker.exists, home.parent / ".prometheus-fetch.lock", fetch)
    return bin_dir


def _run(command: list[str], cwd: str) -> None:
    run_checked(command, cwd, FETCH_TIMEOUT_S)


@dataclass
class PrometheusServer:
    """A Prometheus server of its own (data under `home`) on 127.0.0.1:`port`, with `config` (YAML text)."""

    home: Path
    port: int
    config: str
    cache_dir: Path | None = None
    _process: subprocess.Popen[bytes] | None = field(default=None, init=False)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 60.0) -> None:
        binary = fetch_prometheus(self.cache_dir) / "prometheus"
        self.home.mkdir(parents=True, exist_ok=True)
        config_file = self.home / "prometheus.yml"
        config_file.write_text(self.config)
        command = [str(binary), f"--config.file={config_file}", f"--storage.tsdb.path={self.home / 'data'}",
                   f"--web.listen-address=127.0.0.1:{self.port}", "--web.enable-lifecycle"]
        with open(self.home / "prometheus.log", "ab") as log:
            self._process = subprocess.Popen(command, cwd=self.home, stdout=log, stderr=subprocess.STDOUT)
        process = self._process
        try:
            wait_until(self._ready, timeout_s, f"Prometheus ready on {self.url}",
                       abort_if=lambda: process.poll() is not None)
        except StackError as error:
            self.stop()
            raise StackError(f"{error}; its log: {self.log_tail()}") from None

    def log_tail(self, chars: int = 2000) -> str:
        path = self.home / "prometheus.log"
        return path.read_text(errors="replace")[-chars:] if path.exists() else ""

    def _ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as response:  # noqa: S310 - our http URL
                return bool(response.status == 200)
        except OSError:
            return False

    def stop(self) -> None:
        if self._process is not None:
            self._process.terminate()
            try:
                self._process.wait(15)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait(5)
            self._process = None
