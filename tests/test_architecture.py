"""The shape of the package, checked: the layers contract, module and function sizes, every
default written once (in its config field), and the one list of each name set."""

from __future__ import annotations

import ast
import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT
from ssd_local import config as C

PACKAGE = ROOT / "ssd_local"
CONFIG_DIR = PACKAGE / "config"
CONFIGS = [C.SampleConfig, C.TrainConfig, C.ExportConfig, C.ServeConfig, C.EvalConfig,
           C.CompareConfig, C.LensConfig, C.HandoffConfig, C.PushConfig, C.SandboxLimits]
LISTS = {"BACKENDS": C.BACKENDS, "TRAIN_BACKENDS": C.TRAIN_BACKENDS,
         "QUANT_TYPES": C.QUANT_TYPES, "STAGES": C.STAGES}


def modules(root: Path = PACKAGE) -> list[Path]:
    return sorted(p for p in root.rglob("*.py") if "__pycache__" not in p.parts)


def test_layers_contract_holds():
    """import-linter's contracts in pyproject.toml: errors/events < config < engines <
    core < TUI < CLI; engine libraries only in the engines; no UI below the UIs."""
    exe = Path(sys.executable).with_name("lint-imports")
    r = subprocess.run([str(exe)], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
    assert "0 broken" in r.stdout


def test_no_module_over_500_lines_and_no_function_over_80():
    long_modules, long_functions = [], []
    for p in modules():
        text = p.read_text()
        if len(text.splitlines()) > 500:
            long_modules.append(f"{p.relative_to(ROOT)}: {len(text.splitlines())} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                if n > 80:
                    long_functions.append(f"{p.relative_to(ROOT)}:{node.lineno} {node.name}: {n}")
    assert long_modules == [] and long_functions == []


def _defaults() -> dict[str, set]:
    """Field name -> the default values config fields of that name have."""
    out: dict[str, set] = {}
    for cls in CONFIGS:
        for f in dataclasses.fields(cls):
            if f.default is dataclasses.MISSING or f.default is None:
                continue
            out.setdefault(f.name, set()).add(f.default)
    return out


def _same(value: object, defaults: set) -> bool:
    return any(type(value) is type(d) and value == d for d in defaults)


def _literal_duplicates(path: Path, defaults: dict[str, set], distinctive: set[str]
                        ) -> list[str]:
    """Places in ``path`` that restate a config default: a parameter default, a keyword
    argument or an assignment under the field's own name with the field's default value;
    a distinctive default string anywhere; a copy of one of the config lists."""
    hits = []
    lists = {tuple(v) for v in LISTS.values()}

    def named(name: str, value: ast.AST, line: int) -> None:
        if isinstance(value, ast.Constant) and name.lower() in defaults \
                and not isinstance(value.value, bool) \
                and _same(value.value, defaults[name.lower()]):
            hits.append(f"{path.relative_to(ROOT)}:{line} {name}={value.value!r}")

    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            a = node.args
            pos = a.posonlyargs + a.args
            for arg, d in zip(pos[len(pos) - len(a.defaults):], a.defaults):
                named(arg.arg, d, node.lineno)
            for arg, d in zip(a.kwonlyargs, a.kw_defaults):
                if d is not None:
                    named(arg.arg, d, node.lineno)
        elif isinstance(node, ast.keyword) and node.arg:
            named(node.arg, node.value, node.value.lineno)
        elif isinstance(node, ast.Assign):
            for t in node.targets:
                if isinstance(t, ast.Name):
                    named(t.id, node.value, node.lineno)
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) \
                and node.value is not None:
            named(node.target.id, node.value, node.lineno)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            for d in distinctive:
                if d in node.value:
                    hits.append(f"{path.relative_to(ROOT)}:{node.lineno} {d!r}")
        elif isinstance(node, (ast.Tuple, ast.List)) and node.elts and all(
                isinstance(e, ast.Constant) for e in node.elts):
            if tuple(e.value for e in node.elts) in lists:
                hits.append(f"{path.relative_to(ROOT)}:{node.lineno} a copy of a config list")
    return hits


def test_every_default_is_written_once():
    """A default literal of a config field appears nowhere else in the package: not as a
    parameter default, keyword argument or assignment under the field's name, not as a
    distinctive string, not as a copy of a config list."""
    defaults = _defaults()
    distinctive = {d for ds in defaults.values() for d in ds
                   if isinstance(d, str) and len(d) >= 4 and not d.isalpha()
                   and d not in ("all-linear",)}
    found = []
    for p in modules():
        if CONFIG_DIR in p.parents:
            continue
        found += _literal_duplicates(p, defaults, distinctive)
    assert found == []


def test_the_check_finds_a_restated_default(tmp_path):
    """The check above is not vacuous: a restated default is found."""
    bad = tmp_path / "ssd_local" / "bad.py"
    bad.parent.mkdir()
    bad.write_text("def f(batch_size=8, *, port=8080):\n    g(max_new_tokens=4096)\n"
                   "URL = 'http://127.0.0.1:8080/v1'\nQ = ('f16', 'q8_0', 'q6_k', 'q5_k_m', "
                   "'q4_k_m')\n")
    global ROOT
    old, ROOT = ROOT, tmp_path
    try:
        hits = _literal_duplicates(bad, _defaults(), {"127.0.0.1"})
    finally:
        ROOT = old
    assert len(hits) == 5, hits


def test_registry_names_are_the_config_lists():
    from ssd_local.backends.llamacpp_quantize import QUANTS
    from ssd_local.backends.registry import samplers, trainers

    assert tuple(samplers()) == C.BACKENDS
    assert tuple(trainers()) == C.TRAIN_BACKENDS
    assert tuple(QUANTS) == C.QUANT_TYPES


@pytest.mark.parametrize("cls", CONFIGS[:-1], ids=lambda c: c.__name__)
def test_every_cli_field_has_help(cls):
    for f in dataclasses.fields(cls):
        if f.metadata.get("cli", True):
            assert f.metadata.get("help"), f"{cls.__name__}.{f.name} has no help"
