"""A local stand-in for the Hugging Face Hub's HTTP API, enough for huggingface-hub's
``snapshot_download``/``hf_hub_download``/``model_info``: repos are folders on disk. Tests
point HF_ENDPOINT at it, so the real download code runs against local fixtures."""

from __future__ import annotations

import hashlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlparse


class FakeHub:
    def __init__(self, repos: dict[str, Path]):
        self.repos = repos  # "org/name" -> folder
        self.requests: list[str] = []
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output clean
                pass

            def do_HEAD(self):
                self._serve(body=False)

            def do_GET(self):
                self._serve(body=True)

            def _send(self, code, data=b"", headers=None, body=True):
                self.send_response(code)
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if body:
                    self.wfile.write(data)

            def _serve(self, body):
                path = unquote(urlparse(self.path).path)
                hub.requests.append(f"{self.command} {path}")
                parts = path.strip("/").split("/")
                if parts[:2] == ["api", "models"]:
                    repo = "/".join(parts[2:4])
                    if repo not in hub.repos:
                        return self._send(404, b'{"error": "Repository not found"}',
                                          {"X-Error-Code": "RepoNotFound",
                                           "Content-Type": "application/json"}, body)
                    if len(parts) > 4 and parts[4] == "tree":
                        return self._send(200, json.dumps(hub.tree(repo)).encode(),
                                          {"Content-Type": "application/json"}, body)
                    return self._send(200, json.dumps(hub.info(repo)).encode(),
                                      {"Content-Type": "application/json"}, body)
                # /{org}/{name}/resolve/{rev}/{file...}
                if len(parts) >= 5 and parts[2] == "resolve":
                    repo, fname = "/".join(parts[:2]), "/".join(parts[4:])
                    if repo not in hub.repos:
                        return self._send(404, b"", {"X-Error-Code": "RepoNotFound"}, body)
                    f = hub.repos[repo] / fname
                    if not f.is_file():
                        return self._send(404, b"", {"X-Error-Code": "EntryNotFound"}, body)
                    data = f.read_bytes()
                    return self._send(200, data, {
                        "X-Repo-Commit": hub.sha(repo),
                        "ETag": '"' + hashlib.sha256(data).hexdigest() + '"',
                        "Content-Type": "application/octet-stream"}, body)
                return self._send(404, b"", {}, body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def sha(self, repo: str) -> str:
        return hashlib.sha1(repo.encode()).hexdigest()

    def info(self, repo: str) -> dict:
        root = self.repos[repo]
        files = sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())
        return {"id": repo, "modelId": repo, "sha": self.sha(repo), "private": False,
                "siblings": [{"rfilename": f, "size": (root / f).stat().st_size}
                             for f in files]}

    def tree(self, repo: str) -> list[dict]:
        root = self.repos[repo]
        return [{"type": "file", "path": str(p.relative_to(root)), "size": p.stat().st_size,
                 "oid": hashlib.sha1(p.read_bytes()).hexdigest()}
                for p in sorted(root.rglob("*")) if p.is_file()]

    def __enter__(self) -> "FakeHub":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
