"""A throw-away PostgreSQL server for tests of distributed compiles (optuna RDB storage).

The server comes from the Debian packages (``/usr/lib/postgresql/<version>/bin``), runs in a temp
dir on loopback on a free port with trust auth, and is stopped at the end of the session. Without
the binaries the tests skip, unless ``OOBLECK_REQUIRE_POSTGRES=1`` (CI) turns that into a failure.
PostgreSQL refuses to run as root, so under root the server runs as an unprivileged system user.
"""

from __future__ import annotations

import glob
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

SYSTEM_USER = "oobleck-pg"  # unprivileged OS user the server runs as when we are root
ROLE = "oobleck"  # database superuser role created by initdb
DATABASE = "oobleck_test"
STARTUP_TIMEOUT_S = 60.0
REQUIRE_ENV = "OOBLECK_REQUIRE_POSTGRES"


class PostgresUnavailable(Exception):
    """The PostgreSQL server binaries are not installed."""


def find_bin_dir() -> Path:
    """The newest Debian PostgreSQL bin dir, else the one on PATH; raises PostgresUnavailable."""

    def version_key(path: str) -> tuple[int, ...]:
        return tuple(int(part) for part in re.findall(r"\d+", Path(path).parent.parent.name))

    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"), key=version_key)
    if candidates:
        return Path(candidates[-1]).parent
    on_path = shutil.which("postgres")
    if on_path and shutil.which("initdb"):
        return Path(on_path).parent
    raise PostgresUnavailable(
        "no PostgreSQL server binaries (looked in /usr/lib/postgresql/*/bin and PATH); install the Debian package `postgresql`"
    )


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _ensure_system_user() -> pwd.struct_passwd:
    """Create the unprivileged server user if missing (tolerates a parallel session creating it first)."""
    try:
        return pwd.getpwnam(SYSTEM_USER)
    except KeyError:
        pass
    useradd = shutil.which("useradd") or "/usr/sbin/useradd"
    result = subprocess.run([useradd, "-r", "-M", "-s", "/usr/sbin/nologin", SYSTEM_USER], check=False, capture_output=True, text=True)
    try:
        return pwd.getpwnam(SYSTEM_USER)
    except KeyError:
        raise RuntimeError(f"could not create system user {SYSTEM_USER!r} for PostgreSQL: {result.stderr.strip()}") from None


def _tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


@dataclass
class PostgresServer:
    """A running server: where it listens and how to reach it."""

    bin_dir: Path
    root: Path
    port: int
    user: pwd.struct_passwd | None  # None: runs as the current (non-root) user
    startup_s: float = 0.0  # initdb + start + createdb, for the record

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def socket_dir(self) -> Path:
        return self.root / "sock"

    @property
    def log_path(self) -> Path:
        return self.root / "server.log"

    def url(self, database: str = DATABASE) -> str:
        """SQLAlchemy URL for optuna's RDBStorage."""
        return f"postgresql+psycopg2://{ROLE}@127.0.0.1:{self.port}/{database}"

    def run(self, *args: str, timeout: float = STARTUP_TIMEOUT_S) -> subprocess.CompletedProcess[str]:
        """Run a PostgreSQL client/server binary as the server's user."""
        kwargs: dict = {}
        env = {**os.environ, "LC_ALL": "C", "HOME": str(self.root), "PGHOST": str(self.socket_dir)}
        env.pop("PGPORT", None)  # a stray PGPORT would leak into initdb's bootstrap
        if self.port:
            env["PGPORT"] = str(self.port)
        if self.user is not None:
            kwargs = {"user": self.user.pw_uid, "group": self.user.pw_gid, "extra_groups": []}
        cmd = [str(self.bin_dir / args[0]), *args[1:]]
        return subprocess.run(cmd, check=False, cwd=self.root, env=env, capture_output=True, text=True, timeout=timeout, **kwargs)

    def check(self, *args: str, timeout: float = STARTUP_TIMEOUT_S) -> str:
        """Like run, but failure raises with the command's output and the server log tail."""
        try:
            result = self.run(*args, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise RuntimeError(
                f"`{' '.join(args)}` timed out after {timeout:.0f}s\n--- server log tail ---\n{_tail(self.log_path)}"
            ) from None
        if result.returncode != 0:
            raise RuntimeError(
                f"`{' '.join(args)}` exited {result.returncode}:\n{result.stdout}{result.stderr}\n--- server log tail ---\n{_tail(self.log_path)}"
            )
        return result.stdout

    def create_database(self, name: str) -> str:
        """Create another database (for tests that want a clean one) and return its URL."""
        self.check("createdb", "-U", ROLE, name)
        return self.url(name)

    def start(self) -> None:
        """Start on self.port and wait until it accepts connections (pg_ctl -w), bounded by the timeout."""
        options = (
            f"-c listen_addresses=127.0.0.1 -c port={self.port} -c unix_socket_directories={self.socket_dir} "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200"
        )
        self.check(
            "pg_ctl", "start", "-D", str(self.data_dir), "-l", str(self.log_path), "-w", "-t", str(int(STARTUP_TIMEOUT_S)), "-o", options,
            timeout=STARTUP_TIMEOUT_S + 10,
        )  # fmt: skip

    def stop(self) -> None:
        """Fast shutdown; if pg_ctl cannot, kill the postmaster so no server outlives the tests."""
        try:
            if self.run("pg_ctl", "stop", "-D", str(self.data_dir), "-m", "fast", "-w", "-t", "30", timeout=40).returncode == 0:
                return
        except subprocess.TimeoutExpired:
            pass
        pid_file = self.data_dir / "postmaster.pid"
        if pid_file.exists():
            try:
                os.kill(int(pid_file.read_text().split()[0]), signal.SIGKILL)
            except (ValueError, IndexError, ProcessLookupError, PermissionError):
                pass


def start_server(attempts: int = 3) -> PostgresServer:
    """initdb a fresh cluster in a temp dir and start it; a port taken in the meantime gets a retry on another."""
    began = time.monotonic()
    bin_dir = find_bin_dir()
    user = _ensure_system_user() if os.geteuid() == 0 else None
    # Not under pytest's basetemp: that is 0700 root-owned, so the server user could not reach it.
    root = Path(tempfile.mkdtemp(prefix="oobleck-pg-"))
    server = PostgresServer(bin_dir=bin_dir, root=root, port=0, user=user)
    server.socket_dir.mkdir()
    if user is not None:
        os.chown(root, user.pw_uid, user.pw_gid)
        os.chown(server.socket_dir, user.pw_uid, user.pw_gid)
    try:
        server.check("initdb", "-D", str(server.data_dir), "-U", ROLE, "-A", "trust", "-E", "UTF8", "--locale=C", "--no-sync")
        for attempt in range(attempts):
            server.port = _free_port()
            try:
                server.start()
                break
            except RuntimeError:
                if attempt == attempts - 1 or "could not bind" not in _tail(server.log_path):
                    raise
        server.check("createdb", "-U", ROLE, DATABASE)
        server.startup_s = time.monotonic() - began
    except BaseException:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)
        raise
    return server


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A real PostgreSQL server for the whole session; skips (or fails under OOBLECK_REQUIRE_POSTGRES=1) without binaries."""
    try:
        find_bin_dir()
    except PostgresUnavailable as exc:
        if os.environ.get(REQUIRE_ENV) == "1":
            pytest.fail(f"{exc} ({REQUIRE_ENV}=1)")
        pytest.skip(str(exc))
    server = start_server()
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(server.root, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_url(postgres_server: PostgresServer) -> str:
    """`postgresql+psycopg2://oobleck@127.0.0.1:PORT/oobleck_test` on the session's server."""
    return postgres_server.url()
