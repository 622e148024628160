"""``ssd-local push RUN ORG/NAME``: the run's GGUFs (and with ``--merged`` its transformers
folder) and a model card (``app/modelcard.py``) to a Hugging Face Hub model repo, through
huggingface-hub: ``create_repo(exist_ok=True)`` then one ``create_commit`` with every file.
HF_TOKEN, ``hf auth login``, HF_ENDPOINT and HF_HUB_OFFLINE work as for downloads.

The commit is one unit: the Hub sees all files or none. Large files go up first (Xet when
``hf_xet`` is installed, else the LFS protocol) and a file whose content the Hub already
has is not sent again, so rerunning after a dropped connection resumes cheaply. The card
is kept as ``RUN/hub/README.md``. huggingface-hub's own progress bars are turned off while
it uploads (the core draws nothing); the events say what is being sent.

User mistakes end in one line naming the fix: no GGUF yet, a bad repo id, the Hub
answering 401 (no or a read-only token; a private repo always needs one) or 403, the Hub
unreachable, HF_HUB_OFFLINE set.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..config import PushConfig
from ..errors import UserError
from ..events import Log, OnEvent, ignore
from . import modelcard
from .export import run_ggufs
from .runs import Run, atomic_write_bytes

_NETWORK = ("ConnectError", "ConnectTimeout", "ConnectionError", "NetworkError",
            "TimeoutException", "ReadTimeout", "RemoteProtocolError", "ProxyError")


@dataclass(frozen=True)
class PushResult:
    repo_id: str
    url: str
    commit_url: str | None
    files: list[tuple[str, int]]  # (path in the repo, bytes), the card included
    card: Path  # the card as written to the run
    private: bool


def check_repo_id(repo_id: str) -> str:
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        if repo_id.count("/") != 1:
            raise HFValidationError("not ORG/NAME")
        validate_repo_id(repo_id)
    except HFValidationError:
        raise UserError(f"'{repo_id}' is not a Hub repo id; use ORG/NAME with letters, "
                        "digits, '-', '_' or '.' (at most 96 characters), e.g. "
                        "my-name/smollm2-ssd") from None
    return repo_id


def files_to_push(run: Run, cfg: PushConfig) -> tuple[dict[str, Path], list[tuple[str, Path]]]:
    """The run's GGUFs to upload by quant, and every (path in repo, local file)."""
    have = run_ggufs(run)
    asked = cfg.quants()
    if not have:
        raise UserError(f"run '{run.name}' has no GGUF yet; run `ssd-local export "
                        f"{run.name}` first")
    missing = [q for q in asked or () if q not in have]
    if missing:
        raise UserError(f"run '{run.name}' has no {', '.join(missing)} GGUF; make it with "
                        f"`ssd-local export {run.name} --quant {','.join(missing)}`")
    ggufs = {q: have[q] for q in (asked or sorted(have))}
    files = [(p.name, p) for p in ggufs.values()]
    if cfg.merged:
        merged = run.path / "merged"
        if not (merged / "config.json").exists():
            raise UserError(f"run '{run.name}' has no merged model to upload; run `ssd-local "
                            f"train {run.name}` (or drop --merged)")
        files += [(p.relative_to(merged).as_posix(), p) for p in sorted(merged.rglob("*"))
                  if p.is_file() and p.name != "README.md"
                  and not any(part.startswith(".") for part in p.relative_to(merged).parts)]
    return ggufs, files


def push(run_name: str, repo_id: str, cfg: PushConfig, *,
         on_event: OnEvent = ignore) -> PushResult:
    from ..backends.gguf_chat import read_chat

    cfg.validate()
    check_repo_id(repo_id)
    run = Run.load(run_name)
    ggufs, files = files_to_push(run, cfg)
    arch = read_chat(next(iter(ggufs.values()))).meta.get("general.architecture")
    card = run.path / "hub" / "README.md"
    atomic_write_bytes(card, modelcard.card(run, repo_id, ggufs, cfg.merged, arch).encode())
    files.append(("README.md", card))
    url, commit = _upload(repo_id, files, cfg.private, run.name, on_event)
    return PushResult(repo_id, url, commit, [(r, p.stat().st_size) for r, p in files], card,
                      cfg.private)


def _upload(repo_id: str, files: list[tuple[str, Path]], private: bool, run_name: str,
            on_event: OnEvent) -> tuple[str, str | None]:
    from huggingface_hub import CommitOperationAdd, HfApi, constants
    from huggingface_hub.utils import (are_progress_bars_disabled, disable_progress_bars,
                                       enable_progress_bars)

    api = HfApi()
    size = sum(p.stat().st_size for _, p in files)
    bars_were_off = are_progress_bars_disabled()
    disable_progress_bars()
    try:
        on_event(Log(f"creating {repo_id} on {constants.ENDPOINT} (kept if it exists)"))
        url = str(api.create_repo(repo_id, private=private, exist_ok=True,
                                  repo_type="model"))
        on_event(Log(f"uploading {len(files)} files, {size / 1e6:.1f} MB, in one commit"))
        info = api.create_commit(repo_id, [CommitOperationAdd(r, str(p)) for r, p in files],
                                 commit_message=f"ssd-local: upload the run {run_name}",
                                 repo_type="model")
    except Exception as exc:  # huggingface-hub's and the HTTP client's errors
        raise _hub_error(exc, repo_id, private, constants.ENDPOINT) from None
    finally:
        if not bars_were_off:
            enable_progress_bars()
    return url, getattr(info, "commit_url", None)


def _hub_error(exc: Exception, repo_id: str, private: bool, endpoint: str) -> UserError:
    from huggingface_hub import errors

    org = repo_id.split("/")[0]
    if isinstance(exc, errors.OfflineModeIsEnabled):
        return UserError("HF_HUB_OFFLINE is set, so nothing can be uploaded; unset it "
                         "(HF_HUB_OFFLINE=0) to push")
    status = next((getattr(e.response, "status_code", None) for e in _chain(exc)
                   if getattr(e, "response", None) is not None), None)
    if status == 401:
        return UserError(f"the Hub answered 401 Unauthorized for {repo_id}: "
                         + ("a private repo needs a token; " if private else "")
                         + "set HF_TOKEN (or run `hf auth login`) to a token with write "
                           "access")
    if status == 403:
        return UserError(f"the Hub answered 403 Forbidden: your token cannot write to "
                         f"'{org}'; use a write token of a member of {org}, or push to your "
                         "own namespace")
    if status == 404:
        return UserError(f"the Hub has no repo {repo_id} this token can write to (404); "
                         "check the id and HF_TOKEN")
    if _is_network(exc):
        return UserError(f"cannot reach the Hugging Face Hub at {endpoint} "
                         f"({type(_root(exc)).__name__}); check the network (or HF_ENDPOINT) "
                         "and rerun: files the Hub already has are not sent again")
    if status is not None:
        return UserError(f"the Hub answered {status} while uploading to {repo_id}; rerun "
                         "later (files it already has are not sent again)")
    return UserError(f"uploading to {repo_id} failed ({type(exc).__name__}: {exc}"[:300] + ")")


def _chain(exc: BaseException) -> list[BaseException]:
    """``exc`` and the exceptions it was raised from (huggingface-hub wraps its own)."""
    out: list[BaseException] = []
    e: BaseException | None = exc
    while e is not None and e not in out:
        out.append(e)
        e = e.__cause__ or e.__context__
    return out


def _root(exc: BaseException) -> BaseException:
    return _chain(exc)[-1]


def _is_network(exc: BaseException) -> bool:
    """A connection-level failure anywhere in the chain (httpx's transport errors, the
    socket's ConnectionError and timeouts), not an HTTP answer."""
    return any(c.__name__ in _NETWORK for e in _chain(exc) for c in type(e).__mro__)
