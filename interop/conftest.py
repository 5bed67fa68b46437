"""Fixtures that run the real `deskbridge backend` binary for the interop suite.

Every backend is a separate process on 127.0.0.1:0 with its own temporary data
dir, seeded with `seed-demo --json`. Readiness is the printed "listening" line
followed by a 200 from GET /healthz; nothing here sleeps for a fixed time.
"""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import requests

REPO_ROOT = Path(__file__).resolve().parent.parent
START_TIMEOUT_SECS = 30.0
STOP_TIMEOUT_SECS = 10.0
HTTP_TIMEOUT_SECS = 10.0
LISTENING = re.compile(r"deskbridge backend listening on (http://\S+)")


def backend_binary() -> Path:
    configured = os.environ.get("DESKBRIDGE_BIN")
    path = Path(configured).resolve() if configured else REPO_ROOT / "target" / "debug" / "deskbridge"
    if not path.is_file() or not os.access(path, os.X_OK):
        pytest.exit(
            f"deskbridge binary not found at {path}: build it with `cargo build -p deskbridge` "
            "or point DESKBRIDGE_BIN at it",
            returncode=2,
        )
    return path


@dataclass(frozen=True)
class DemoUser:
    username: str
    password: str
    customer_id: str


@dataclass
class Backend:
    """One running backend and the demo credentials seeded into it."""

    url: str
    config: dict
    users: list[DemoUser]
    client_id: str
    client_secret: str
    client_scopes: str
    api_key: str
    process: subprocess.Popen
    log_path: Path
    _stdout_lines: "queue.Queue[str | None]" = field(repr=False)

    @property
    def token_url(self) -> str:
        return f"{self.url}/access_token"

    @property
    def jwks_url(self) -> str:
        return f"{self.url}/.well-known/jwks.json"

    @property
    def metadata_url(self) -> str:
        return f"{self.url}/.well-known/oauth-authorization-server"

    @property
    def profile_url(self) -> str:
        return f"{self.url}/getprofile"

    @property
    def issuer(self) -> str:
        return self.config.get("issuer", self.url)

    @property
    def audience(self) -> str:
        return self.config.get("audience", "deskbridge")

    def user(self, username: str = "alice") -> DemoUser:
        return next(u for u in self.users if u.username == username)

    def login(self, username: str = "alice") -> str:
        """Logs a demo customer in; returns the customer JWT."""
        user = self.user(username)
        response = requests.post(
            f"{self.url}/customer_authenticate",
            data={"username": user.username, "password": user.password},
            timeout=HTTP_TIMEOUT_SECS,
        )
        assert response.status_code == 200, response.text
        body = response.json()
        assert set(body) >= {"issued_at", "JWT", "expires_in"}, body
        assert all(isinstance(body[k], str) for k in ("issued_at", "JWT", "expires_in")), body
        return body["JWT"]

    def profile_headers(self, customer_jwt: str) -> dict[str, str]:
        """The two non-OAuth credentials of a /getprofile call; the bearer
        token is added by whichever OAuth library is under test."""
        return {"api-key": self.api_key, "customer-auth": f"JWT {customer_jwt}"}

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> int:
        """SIGTERM, then wait for a graceful exit; returns the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=STOP_TIMEOUT_SECS)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
                raise AssertionError(
                    f"backend {self.url} ignored SIGTERM for {STOP_TIMEOUT_SECS}s; log:\n{self.log()}"
                )
        return self.process.returncode


def _toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a valid TOML basic string
    raise TypeError(f"unsupported config value {value!r}")


def _drain(stream, lines: "queue.Queue[str | None]") -> None:
    for line in stream:
        lines.put(line)
    lines.put(None)


def start_backend(binary: Path, workdir: Path, config: dict | None = None) -> Backend:
    config = dict(config or {})
    data_dir = workdir / "data"
    data_dir.mkdir(parents=True)
    base = [str(binary), "backend", "--data-dir", str(data_dir)]
    if config:
        config_path = workdir / "backend.toml"
        config_path.write_text("".join(f"{k} = {_toml_value(v)}\n" for k, v in config.items()))
        base += ["--config", str(config_path)]

    seeded = subprocess.run(
        base + ["seed-demo", "--json"], capture_output=True, text=True, timeout=START_TIMEOUT_SECS
    )
    assert seeded.returncode == 0, f"seed-demo failed ({seeded.returncode}):\n{seeded.stderr}"
    seed = json.loads(seeded.stdout)

    log_path = workdir / "backend.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            base + ["--listen", "127.0.0.1:0"],
            stdout=subprocess.PIPE,
            stderr=log,
            stdin=subprocess.DEVNULL,
            text=True,
        )
    lines: queue.Queue[str | None] = queue.Queue()
    threading.Thread(target=_drain, args=(process.stdout, lines), daemon=True).start()

    def fail(reason: str):
        if process.poll() is None:
            process.kill()
            process.wait()
        raise AssertionError(f"backend did not start: {reason}; log:\n{log_path.read_text(errors='replace')}")

    deadline = time.monotonic() + START_TIMEOUT_SECS
    url = None
    while url is None:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            fail(f"no listening line within {START_TIMEOUT_SECS}s")
        try:
            line = lines.get(timeout=remaining)
        except queue.Empty:
            continue
        if line is None:
            fail(f"exited with {process.wait()} before printing its address")
        match = LISTENING.search(line)
        if match:
            url = match.group(1).rstrip("/")

    # The line is printed once the socket is bound, so /healthz normally
    # answers at once; the short poll only covers a slow first accept.
    poll_secs = 0.01
    while True:
        try:
            health = requests.get(f"{url}/healthz", timeout=HTTP_TIMEOUT_SECS)
            if health.status_code == 200 and health.json().get("status") == "ok":
                break
        except requests.ConnectionError:
            pass
        if process.poll() is not None:
            fail(f"exited with {process.returncode}")
        if time.monotonic() > deadline:
            fail(f"/healthz not ready within {START_TIMEOUT_SECS}s")
        time.sleep(poll_secs)
        poll_secs = min(poll_secs * 2, 0.5)

    client = seed["clients"][0]
    key = next(k for k in seed["api_keys"] if "getprofile" in k["apis"])
    return Backend(
        url=url,
        config=config,
        users=[DemoUser(u["username"], u["password"], u["customer_id"]) for u in seed["users"]],
        client_id=client["client_id"],
        client_secret=client["client_secret"],
        client_scopes=client["scopes"],
        api_key=key["key"],
        process=process,
        log_path=log_path,
        _stdout_lines=lines,
    )


class BackendFactory:
    """Starts backends with a given config, at most one per distinct config."""

    def __init__(self, binary: Path, tmp_factory: pytest.TempPathFactory):
        self._binary = binary
        self._tmp = tmp_factory
        self._running: dict[tuple, Backend] = {}

    def __call__(self, **config) -> Backend:
        key = tuple(sorted(config.items()))
        if key not in self._running:
            workdir = self._tmp.mktemp("backend")
            self._running[key] = start_backend(self._binary, workdir, config)
        return self._running[key]

    def stop_all(self) -> None:
        failures = []
        for backend in self._running.values():
            try:
                code = backend.stop()
                if code != 0:
                    failures.append(f"{backend.url} exited with {code} on SIGTERM; log:\n{backend.log()}")
            except AssertionError as e:
                failures.append(str(e))
        self._running.clear()
        assert not failures, "\n".join(failures)


@pytest.fixture(scope="session")
def backend_factory(tmp_path_factory: pytest.TempPathFactory):
    factory = BackendFactory(backend_binary(), tmp_path_factory)
    yield factory
    factory.stop_all()


@pytest.fixture(scope="session")
def backend(backend_factory: BackendFactory) -> Backend:
    """The backend with its default configuration (ES256 customer JWTs)."""
    return backend_factory()


@pytest.fixture
def customer_jwt(backend: Backend) -> str:
    return backend.login("alice")


@pytest.fixture
def oauthlib_insecure_transport(monkeypatch: pytest.MonkeyPatch):
    """oauthlib refuses http:// token URLs, loopback included; the backend
    under test serves plain HTTP on 127.0.0.1."""
    monkeypatch.setenv("OAUTHLIB_INSECURE_TRANSPORT", "1")
