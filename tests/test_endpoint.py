"""Sampling through a served engine, against real servers on loopback: `ssd-local serve` on
SmolLM2-135M, and a fault-injecting proxy in front of it (500s, 429s, dropped connections).
Every (prompt_id, sample_index) must land exactly once, also across kill -9 and resume."""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from conftest import ROOT, run_cli

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(smollm2, tmp_path_factory):
    """`ssd-local serve smollm2-135m` on a free loopback port, for the whole module."""
    from ssd_local.backends.endpoint import wait_until_up

    port = free_port()
    env = dict(os.environ, SSD_LOCAL_HOME=str(tmp_path_factory.mktemp("serve-home")))
    proc = subprocess.Popen([sys.executable, "-m", "ssd_local.cli", "serve", "smollm2-135m",
                             "--port", str(port)], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/v1"
    if not wait_until_up(url):
        proc.kill()
        pytest.fail("ssd-local serve did not start")
    yield url
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=30)


class FaultProxy:
    """Forwards to the real server, but answers some completion requests with a 500, a 429,
    or a connection closed without an answer (before or after the server did the work).
    ``model_id`` renames the served model in /v1/models."""

    def __init__(self, upstream: str, *, faults: bool = True, model_id: str | None = None,
                 fail_all: bool = False):
        up = upstream.split("//", 1)[1].split("/", 1)[0]
        self.host, self.port = up.split(":")[0], int(up.split(":")[1])
        self.count = 0
        self.in_flight = self.peak_in_flight = 0  # completion requests being answered
        self.model_id = model_id
        self.injected: dict[str, int] = {}
        self.lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # quiet
                pass

            def _forward(self, body: bytes | None) -> tuple[int, bytes, str]:
                c = http.client.HTTPConnection(proxy.host, proxy.port, timeout=300)
                headers = {k: v for k, v in self.headers.items()
                           if k.lower() not in ("host", "content-length", "connection")}
                c.request(self.command, self.path, body=body, headers=headers)
                r = c.getresponse()
                data = r.read()
                ctype = r.getheader("content-type", "application/json")
                c.close()
                return r.status, data, ctype

            def _reply(self, status: int, data: bytes, ctype: str = "application/json"):
                self.send_response(status)
                self.send_header("content-type", ctype)
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _drop(self):
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)

            def do_GET(self):
                status, data, ctype = self._forward(None)
                if proxy.model_id and self.path.endswith("/models"):
                    obj = json.loads(data)
                    for m in obj.get("data", []):
                        m["id"] = proxy.model_id
                    data = json.dumps(obj).encode()
                self._reply(status, data, ctype)

            def do_POST(self):
                with proxy.lock:
                    proxy.in_flight += 1
                    proxy.peak_in_flight = max(proxy.peak_in_flight, proxy.in_flight)
                try:
                    self._post()
                finally:
                    with proxy.lock:
                        proxy.in_flight -= 1

            def _post(self):
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                with proxy.lock:
                    proxy.count += 1
                    n = proxy.count
                if fail_all:
                    return self._reply(503, b'{"error": {"message": "down"}}')
                fault = None
                if faults:
                    fault = {1: "500", 2: "429", 4: "drop", 6: "drop-after"}.get(n % 7)
                if fault:
                    with proxy.lock:
                        proxy.injected[fault] = proxy.injected.get(fault, 0) + 1
                if fault == "500":
                    return self._reply(500, b'{"error": {"message": "injected"}}')
                if fault == "429":
                    return self._reply(429, b'{"error": {"message": "slow down"}}')
                if fault == "drop":
                    return self._drop()
                status, data, ctype = self._forward(body)
                if fault == "drop-after":
                    return self._drop()  # the server did the work; the answer is lost
                self._reply(status, data, ctype)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> "FaultProxy":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def samples_of(home: Path, run: str) -> list[dict]:
    f = home / "runs" / run / "samples.jsonl"
    return [json.loads(x) for x in f.read_text().splitlines()] if f.exists() else []


def keys_once(rows: list[dict]) -> set:
    keys = [(r["prompt_id"], r["sample_index"]) for r in rows]
    assert len(keys) == len(set(keys)), "a sample landed twice"
    return set(keys)


def test_sample_16_prompts_at_concurrency_4(server, ssd_home):
    from ssd_local.app.models import resolve
    from ssd_local.app.prompts import load_builtin, messages
    from ssd_local.backends.registry import open_tokenizer
    from ssd_local.config import SYSTEM_PROMPT

    r = run_cli("sample", "smollm2-135m", "--endpoint", server, "--prompts", "builtin",
                "--limit", "16", "--concurrency", "4", "--max-new-tokens", "24", "--run", "e1")
    assert r.returncode == 0, r.stderr
    rows = samples_of(ssd_home, "e1")
    assert len(keys_once(rows)) == 16
    assert all(x["engine"] == "endpoint" and x["completion_tokens"] > 0 for x in rows)
    # conditioned on exactly our own chat rendering, which training rebuilds
    model = resolve("smollm2-135m")
    handle = open_tokenizer(model.kind, model.path)
    render = handle.render
    by_id = {p.id: p for p in load_builtin()}
    for x in rows[:3]:
        assert x["prompt_text"] == render(messages(by_id[x["prompt_id"]], SYSTEM_PROMPT))
    handle.close()
    man = json.loads((ssd_home / "runs" / "e1" / "manifest.json").read_text())
    assert man["endpoint"]["model_id"] == "smollm2-135m"
    assert man["endpoint"]["mode"] == "completions"
    assert "endpoint: 16 requests" in r.stderr.replace("\n", " ")


@pytest.mark.parametrize("concurrency", [1, 3])
def test_concurrency_bounds_the_requests_in_flight(server, ssd_home, concurrency):
    """--concurrency N: at most N requests reach the server at once, and with N > 1 they
    do overlap (counted by a proxy in front of the real server)."""
    with FaultProxy(server, faults=False) as proxy:
        r = run_cli("sample", "smollm2-135m", "--endpoint", proxy.url, "--prompts", "builtin",
                    "--limit", "6", "--concurrency", str(concurrency), "--batch-size", "1",
                    "--max-new-tokens", "8", "--run", f"c{concurrency}")
    assert r.returncode == 0, r.stderr
    assert len(keys_once(samples_of(ssd_home, f"c{concurrency}"))) == 6
    assert proxy.peak_in_flight == concurrency
    assert f"at most {concurrency} in flight" in r.stderr.replace("\n", " ")


def test_faults_are_retried_and_every_sample_lands_once(server, ssd_home):
    with FaultProxy(server) as proxy:
        r = run_cli("sample", "smollm2-135m", "--endpoint", proxy.url, "--prompts", "builtin",
                    "--limit", "12", "--concurrency", "4", "--max-new-tokens", "16",
                    "--run", "e2")
    assert r.returncode == 0, r.stderr
    assert len(keys_once(samples_of(ssd_home, "e2"))) == 12
    assert set(proxy.injected) == {"500", "429", "drop", "drop-after"}
    out = r.stderr.replace("\n", " ")
    assert "retried" in out and "0 failed" in out


def test_a_request_that_keeps_failing_is_named(server, ssd_home, monkeypatch):
    from ssd_local.config import SampleConfig
    from ssd_local.errors import UserError
    from ssd_local.app.runs import Run
    from ssd_local.app.sampling import sample
    from ssd_local.backends.endpoint import EndpointEngine

    monkeypatch.setattr(EndpointEngine, "BACKOFF_S", 0.01)
    with FaultProxy(server, fail_all=True) as proxy:
        with pytest.raises(UserError, match=r"2 request\(s\) to .* failed after 6 retries: "
                                            r"b00\d#0: HTTP 503"):
            sample("smollm2-135m", SampleConfig(endpoint=proxy.url, limit=2,
                                                max_new_tokens=8), "e3")
    assert Run.load("e3").stage_state("sample") == "failed"


def test_kill_9_mid_run_then_resume(server, ssd_home):
    args = ["sample", "smollm2-135m", "--endpoint", server, "--prompts", "builtin",
            "--limit", "20", "--concurrency", "8", "--max-new-tokens", "32", "--run", "r5"]
    proc = subprocess.Popen([sys.executable, "-m", "ssd_local.cli", *args], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while len(samples_of(ssd_home, "r5")) < 3 and time.time() < deadline:
        assert proc.poll() is None
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before = len(samples_of(ssd_home, "r5"))
    assert 3 <= before < 20
    r = run_cli(*args)
    assert r.returncode == 0, r.stderr
    assert len(keys_once(samples_of(ssd_home, "r5"))) == 20


def test_samples_from_another_served_model_are_refused(server, ssd_home):
    r = run_cli("sample", "smollm2-135m", "--endpoint", server, "--limit", "1",
                "--max-new-tokens", "8", "--run", "e4")
    assert r.returncode == 0, r.stderr
    with FaultProxy(server, faults=False, model_id="some-other-model") as proxy:
        r = run_cli("sample", "smollm2-135m", "--endpoint", proxy.url, "--limit", "2",
                    "--max-new-tokens", "8", "--run", "e4")
    assert r.returncode == 2
    assert "was sampled from the served model 'smollm2-135m'" in r.stderr
    assert "serves 'some-other-model'" in r.stderr and "Traceback" not in r.stderr


def test_chat_mode_records_the_servers_template(server, ssd_home):
    r = run_cli("sample", "smollm2-135m", "--endpoint", server, "--chat", "--limit", "2",
                "--max-new-tokens", "8", "--run", "e5")
    assert r.returncode == 0, r.stderr
    man = json.loads((ssd_home / "runs" / "e5" / "manifest.json").read_text())
    assert man["endpoint"]["mode"] == "chat" and man["endpoint"]["server_template"] is True
    # llama-cpp-python's server renders SmolLM2's own template: the probe finds no mismatch
    assert man["endpoint"]["template_mismatch"] is None
    assert len(keys_once(samples_of(ssd_home, "e5"))) == 2
    r = run_cli("sample", "smollm2-135m", "--chat", "--limit", "1", "--run", "e6")
    assert r.returncode == 2 and "--chat applies to --endpoint sampling" in r.stderr
