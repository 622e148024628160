"""A local stand-in for the Hugging Face Hub's HTTP API, enough for huggingface-hub's
``snapshot_download``/``hf_hub_download``/``model_info`` and for its upload path
(``create_repo``, ``create_commit``/``upload_folder``): repos are folders on disk. Tests
point HF_ENDPOINT at it, so the real client code runs against local fixtures.

Upload endpoints, as huggingface-hub 2.x calls them (with HF_HUB_DISABLE_XET=1, so large
files take the LFS path instead of Xet):

- ``POST /api/repos/create`` {name, organization, visibility, type}: 200 {url}; 409 when it
  exists (``exist_ok`` swallows that);
- ``POST /api/validate-yaml`` {content, repoType}: the README's front matter must parse;
- ``POST /api/models/ORG/NAME/preupload/REV`` {files: [{path, sample, size}]}: the upload
  mode of each file, ``lfs`` for weights-like suffixes, binary samples or over 10 MB (as
  the Hub's default .gitattributes and size rule do), else ``regular``;
- ``POST /ORG/NAME.git/info/lfs/objects/batch`` (git-lfs batch API, basic transfer): an
  upload (PUT) and a verify (POST) href per object the hub does not have yet;
- ``PUT /_lfs/OID`` (Content-Length or chunked) and ``POST /_lfs/OID/verify``;
- ``POST /api/models/ORG/NAME/commit/REV``: the NDJSON commit (``header``, ``file`` in
  base64, ``lfsFile`` by sha256, ``deletedFile``) applied to the repo's folder.

With ``token=...`` every upload endpoint answers 401 unless ``Authorization: Bearer TOKEN``
is sent, as the Hub does for a missing or wrong token; the LFS PUT href stands for a
presigned storage URL and needs none."""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlparse


LFS_SUFFIXES = (".gguf", ".safetensors", ".bin", ".pt", ".pth", ".onnx", ".npy", ".zip",
                ".tar", ".gz", ".h5", ".msgpack", ".model", ".parquet", ".arrow")


class FakeHub:
    def __init__(self, repos: dict[str, Path], *, upload_root: Path | None = None,
                 token: str | None = None):
        self.repos = repos  # "org/name" -> folder
        self.requests: list[str] = []
        self.upload_root = upload_root  # where created repos and LFS objects go
        self.token = token  # required on upload endpoints when set
        self.created: dict[str, dict] = {}  # repo -> the create payload
        self.commits: list[dict] = []  # {"repo", "summary", "files": {path: "file"|"lfsFile"}}
        self.lfs_uploads: list[str] = []  # oids PUT to the stand-in
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output clean
                pass

            def do_HEAD(self):
                self._serve(body=False)

            def do_GET(self):
                self._serve(body=True)

            def do_POST(self):
                self._write()

            def do_PUT(self):
                self._write()

            def _body(self) -> bytes:
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    out = b""
                    while True:
                        n = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                        if n == 0:
                            self.rfile.readline()
                            return out
                        out += self.rfile.read(n)
                        self.rfile.readline()
                return self.rfile.read(int(self.headers.get("Content-Length") or 0))

            def _json(self, code, obj, headers=None):
                self._send(code, json.dumps(obj).encode(),
                           {"Content-Type": "application/json", **(headers or {})})

            def _write(self):
                path = unquote(urlparse(self.path).path)
                hub.requests.append(f"{self.command} {path}")
                data = self._body()
                presigned = path.startswith("/_lfs/") and self.command == "PUT"  # as S3's
                if hub.token and not presigned and \
                        self.headers.get("Authorization") != f"Bearer {hub.token}":
                    return self._json(401, {"error": "Invalid credentials in Authorization "
                                                     "header"})
                try:
                    code, obj = hub.write(self.command, path, data)
                except (ValueError, KeyError) as exc:
                    code, obj = 400, {"error": f"bad request: {exc}"}
                return self._json(code, obj)

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

    # -- uploads ---------------------------------------------------------------------------
    def write(self, method: str, path: str, data: bytes) -> tuple[int, dict]:
        parts = path.strip("/").split("/")
        if method == "POST" and path == "/api/repos/create":
            return self.create_repo(json.loads(data))
        if method == "POST" and path == "/api/validate-yaml":
            return self.validate_yaml(json.loads(data)["content"])
        if parts[0] == "_lfs":
            return self.lfs_object(method, parts[1], parts[2:], data)
        if method == "POST" and parts[:2] == ["api", "models"] and len(parts) >= 6:
            repo = "/".join(parts[2:4])
            if repo not in self.repos:
                return 404, {"error": "Repository not found"}
            if parts[4] == "preupload":
                return 200, {"files": [self.upload_mode(f)
                                       for f in json.loads(data)["files"]]}
            if parts[4] == "commit":
                return self.commit(repo, data)
        if method == "POST" and path.endswith(".git/info/lfs/objects/batch"):
            return self.lfs_batch(json.loads(data))
        return 404, {"error": f"no such endpoint: {method} {path}"}

    def create_repo(self, payload: dict) -> tuple[int, dict]:
        repo = "/".join(filter(None, (payload.get("organization"), payload["name"])))
        if repo in self.repos:
            return 409, {"error": "You already created this model repo",
                         "url": f"{self.url}/{repo}"}
        if self.upload_root is None:
            raise ValueError("this stand-in takes no uploads (no upload_root)")
        folder = self.upload_root / repo
        folder.mkdir(parents=True, exist_ok=True)
        self.repos[repo] = folder
        self.created[repo] = payload
        return 200, {"url": f"{self.url}/{repo}", "name": repo}

    def validate_yaml(self, content: str) -> tuple[int, dict]:
        import yaml

        if content.startswith("---\n"):
            try:
                yaml.safe_load(content.split("\n---\n", 1)[0][4:])
            except yaml.YAMLError as exc:
                return 400, {"errors": [{"message": f"invalid YAML: {exc}"}], "warnings": []}
        return 200, {"errors": [], "warnings": []}

    def upload_mode(self, f: dict) -> dict:
        sample = base64.b64decode(f.get("sample", ""))
        lfs = f["path"].endswith(LFS_SUFFIXES) or f["size"] > 10 * 2**20 or b"\0" in sample
        return {"path": f["path"], "uploadMode": "lfs" if lfs else "regular",
                "shouldIgnore": False, "oid": None}

    def _lfs_path(self, oid: str) -> Path:
        return self.upload_root / ".lfs" / oid

    def lfs_batch(self, payload: dict) -> tuple[int, dict]:
        objects = []
        for o in payload["objects"]:
            obj = {"oid": o["oid"], "size": o["size"]}
            if not self._lfs_path(o["oid"]).exists():
                obj["actions"] = {"upload": {"href": f"{self.url}/_lfs/{o['oid']}"},
                                  "verify": {"href": f"{self.url}/_lfs/{o['oid']}/verify"}}
            objects.append(obj)
        return 200, {"transfer": "basic", "objects": objects}

    def lfs_object(self, method: str, oid: str, rest: list[str],
                   data: bytes) -> tuple[int, dict]:
        p = self._lfs_path(oid)
        if method == "PUT":
            if hashlib.sha256(data).hexdigest() != oid:
                return 400, {"error": "content does not match its sha256"}
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(data)
            self.lfs_uploads.append(oid)
            return 200, {}
        if rest == ["verify"]:
            size = json.loads(data).get("size")
            ok = p.exists() and p.stat().st_size == size
            return (200, {}) if ok else (404, {"error": "object not uploaded"})
        return 404, {"error": "unknown LFS request"}

    def commit(self, repo: str, data: bytes) -> tuple[int, dict]:
        root, rec = self.repos[repo], {"repo": repo, "files": {}}
        for line in data.decode().splitlines():
            item = json.loads(line)
            key, v = item["key"], item["value"]
            if key == "header":
                rec["summary"] = v["summary"]
            elif key in ("file", "lfsFile"):
                dest = root / v["path"]
                dest.parent.mkdir(parents=True, exist_ok=True)
                if key == "file":
                    dest.write_bytes(base64.b64decode(v["content"]))
                else:
                    src = self._lfs_path(v["oid"])
                    if not src.exists():
                        return 400, {"error": f"LFS object {v['oid']} was never uploaded"}
                    shutil.copyfile(src, dest)
                rec["files"][v["path"]] = key
            elif key == "deletedFile":
                (root / v["path"]).unlink(missing_ok=True)
        self.commits.append(rec)
        oid = hashlib.sha1(json.dumps(rec, sort_keys=True).encode()).hexdigest()
        return 200, {"commitUrl": f"{self.url}/{repo}/commit/{oid}", "commitOid": oid,
                     "success": True}

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
