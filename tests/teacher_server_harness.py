"""Test-only harness for the teacher server: a real ``llkd serve-teacher`` subprocess and a
fault-injecting reverse proxy in front of it, both on 127.0.0.1.

The proxy takes faults from a schedule, one per arriving chat request, and injects them
*instead of* forwarding, so an injected fault never reaches the model: the per-text counters
then show exactly how often each text reached the model and how often an answer came back.
"""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable, Iterable

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- the real server, as a subprocess that can be killed and restarted ------------------------


class ServerProcess:
    """``python -m llkd.cli serve-teacher`` on a fixed port, so a restart comes back at the same URL."""

    def __init__(self, log_path: Path, port: int | None = None, model: str = "smollm2-135m") -> None:
        self.port = port or free_port()
        self.model = model
        self.log_path = log_path
        self.proc: subprocess.Popen | None = None
        self.starts = 0
        self.kills = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self, wait: bool = True, ready_timeout: float = 180.0) -> None:
        cmd = [sys.executable, "-m", "llkd.cli", "serve-teacher", "--model", self.model, "--port", str(self.port), "--device", "cpu", "--threads", "1"]
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child
        self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=os.environ | {"TOKENIZERS_PARALLELISM": "false"})
        log.close()
        self.starts += 1
        if wait:
            self.wait_ready(ready_timeout)

    def wait_ready(self, timeout: float = 180.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"teacher server exited with {self.proc.returncode}:\n{self.log_path.read_text(errors='replace')[-3000:]}")
            try:
                if httpx.get(f"http://127.0.0.1:{self.port}/health", timeout=1.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise TimeoutError(f"teacher server not ready after {timeout}s")

    def kill(self) -> None:
        """SIGKILL: no graceful shutdown, in-flight requests die with the process."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=30)
            self.kills += 1

    def kill_and_restart(self) -> None:
        self.kill()
        self.start(wait=False)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()


# -- the fault-injecting proxy ------------------------------------------------------------------


@dataclass(frozen=True)
class Fault:
    kind: str  # "delay" | "429" | "500" | "malformed" | "kill"
    seconds: float = 0.0  # "delay": hold the request until the client hangs up, at most this long
    retry_after: str | None = None  # Retry-After header value for "429"


_MALFORMED = b'{"id": "chatcmpl-broken", "object": "chat.completion", "choices": [{"index": 0, "message": {"role": "assis'


class FaultProxy:
    """Reverse proxy on 127.0.0.1 in front of a teacher server.

    Counters are keyed by the request's last user message (one per text):
    ``arrived`` (requests the client sent), ``forwarded`` (reached the model server),
    ``answered`` (a 200 from the model server relayed back). ``injected`` counts faults by kind.
    """

    def __init__(self, upstream: str, faults: Iterable[Fault | None] = (), on_kill: Callable[[], None] | None = None, strip_logprobs: bool = False) -> None:
        self.upstream = upstream.rstrip("/")
        self.on_kill = on_kill
        self.strip_logprobs = strip_logprobs
        self.fail_always: dict[str, str] = {}  # text substring -> fault kind injected on every request
        self._schedule: deque[Fault | None] = deque(faults)  # None: forward untouched
        self._lock = threading.Lock()
        self.arrived: Counter[str] = Counter()
        self.forwarded: Counter[str] = Counter()
        self.answered: Counter[str] = Counter()
        self.upstream_errors: Counter[str] = Counter()
        self.injected: Counter[str] = Counter()
        self.responses: dict[str, list[dict[str, Any]]] = {}  # key -> 200 bodies relayed, in order
        self._client = httpx.Client(timeout=120.0)
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    def __enter__(self) -> "FaultProxy":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._client.close()

    def pending_faults(self) -> int:
        with self._lock:
            return len(self._schedule)

    def per_text(self, counter: Counter[str], texts: Iterable[str]) -> dict[str, int]:
        return {t: sum(n for key, n in counter.items() if t in key) for t in texts}

    def responses_for(self, text: str) -> list[dict[str, Any]]:
        return [body for key, bodies in self.responses.items() if text in key for body in bodies]

    # -- request handling ---------------------------------------------------------------------
    def _next_fault(self, key: str) -> Fault | None:
        with self._lock:
            self.arrived[key] += 1
            for needle, kind in self.fail_always.items():
                if needle in key:
                    self.injected[kind] += 1
                    return Fault(kind)
            fault = self._schedule.popleft() if self._schedule else None
            if fault is not None:
                self.injected[fault.kind] += 1
            return fault

    def _forward(self, key: str, raw: bytes) -> tuple[int, dict[str, str], bytes]:
        with self._lock:
            self.forwarded[key] += 1
        try:
            r = self._client.post(self.upstream + "/chat/completions", content=raw, headers={"Content-Type": "application/json"})
        except httpx.HTTPError as e:  # upstream down or died mid-request: what nginx answers
            with self._lock:
                self.upstream_errors[key] += 1
            return 502, {}, json.dumps({"error": {"message": f"upstream unavailable: {type(e).__name__}"}}).encode()
        body = r.content
        if r.status_code == 200:
            if self.strip_logprobs:  # emulate a server that has no logprobs support
                payload = r.json()
                for choice in payload["choices"]:
                    choice.pop("logprobs", None)
                body = json.dumps(payload).encode()
            with self._lock:
                self.answered[key] += 1
                self.responses.setdefault(key, []).append(json.loads(body))
        return r.status_code, {}, body

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:  # noqa: N802
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                try:
                    key = json.loads(raw)["messages"][-1]["content"]
                except (ValueError, KeyError, IndexError, TypeError):
                    key = "<unparseable request>"
                fault = proxy._next_fault(key)
                if fault is None or fault.kind == "kill":
                    if fault is not None and proxy.on_kill is not None:
                        proxy.on_kill()
                    self._reply(*proxy._forward(key, raw))
                elif fault.kind == "delay":  # hold the request past the client's timeout, then hang up
                    self._wait_for_hangup(fault.seconds)
                    self.close_connection = True
                elif fault.kind == "429":
                    headers = {"Retry-After": fault.retry_after} if fault.retry_after is not None else {}
                    self._reply(429, headers, b'{"error": {"message": "rate limited (injected)", "type": "rate_limit_error"}}')
                elif fault.kind == "500":
                    self._reply(500, {}, b'{"error": {"message": "internal error (injected)", "type": "server_error"}}')
                elif fault.kind == "malformed":
                    self._reply(200, {}, _MALFORMED)
                else:
                    raise ValueError(f"unknown fault {fault.kind}")

            def _wait_for_hangup(self, limit: float) -> None:
                deadline = time.monotonic() + limit
                while time.monotonic() < deadline:
                    ready, _, _ = select.select([self.connection], [], [], 0.1)
                    if ready and not self.connection.recv(1, socket.MSG_PEEK):
                        return

            def _reply(self, status: int, headers: dict[str, str], body: bytes) -> None:
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(body)))
                    for k, v in headers.items():
                        self.send_header(k, v)
                    self.end_headers()
                    self.wfile.write(body)
                except OSError:  # the client gave up on this connection
                    self.close_connection = True

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                pass

        return Handler
