"""`export RUN --to ollama|lmstudio`: the Modelfile (content, and its syntax against Ollama's
documented format), the template choice for ChatML and other families, `ollama create`
with a fake `ollama`, the printed command without one, LM Studio's layout (hard link,
atomic copy, replacement, `lms import`), and the user mistakes through the CLI."""

from __future__ import annotations

import json
import os
import re

import pytest

from conftest import run_cli
from runfake import SMOLLM2, fake_tool, make_run, write_gguf
from ssd_local.app import handoff, ollama
from ssd_local.backends.gguf_chat import read_chat
from ssd_local.config import SYSTEM_PROMPT, ExportConfig, HandoffConfig

pytest.importorskip("llama_cpp")  # the Jinja renderer is llama-cpp-python's
pytest.importorskip("gguf")

# Ollama's template/chatml.gotmpl (ollama/ollama, 2026): the TEMPLATE we write for ChatML
OLLAMA_CHATML = ("{{- range .Messages }}<|im_start|>{{ .Role }}\n{{ .Content }}<|im_end|>\n"
                 "{{ end }}<|im_start|>assistant\n")

# -- Ollama's Modelfile format, as docs/modelfile.mdx documents it -------------------------
INSTRUCTIONS = {"FROM", "PARAMETER", "TEMPLATE", "SYSTEM", "ADAPTER", "LICENSE", "MESSAGE"}
PARAMETERS = {"num_ctx": int, "repeat_last_n": int, "repeat_penalty": float,
              "temperature": float, "seed": int, "stop": str, "num_predict": int,
              "top_k": int, "top_p": float, "min_p": float}


def _unquote(value: str) -> str | None:
    if value.startswith('"""'):
        return value[3:-3] if len(value) >= 6 and value.endswith('"""') else None
    if value.startswith('"'):
        return value[1:-1] if len(value) >= 2 and value.endswith('"') else None
    return value


def parse_modelfile(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION or PARAMETER name, value) pairs; raises AssertionError on anything the
    documented format does not allow: an unknown instruction or parameter, a value of the
    wrong type, an unclosed quote, a MESSAGE role outside system/user/assistant."""
    out, lines, i = [], text.split("\n"), 0
    while i < len(lines):
        line = lines[i].strip()
        i += 1
        if not line or line.startswith("#"):
            continue
        m = re.match(r"([A-Za-z]+)\s+(.*)$", line)
        assert m, f"not INSTRUCTION arguments: {line!r}"
        inst, rest = m.group(1).upper(), m.group(2)
        assert inst in INSTRUCTIONS, inst
        name = inst
        if inst == "PARAMETER":
            name, _, rest = rest.partition(" ")
            assert name in PARAMETERS, f"undocumented parameter {name}"
        elif inst == "MESSAGE":
            role, _, rest = rest.partition(" ")
            assert role in ("system", "user", "assistant"), role
        value = rest.strip()
        while _unquote(value) is None:  # a quoted value runs on to its closing quotes
            assert i < len(lines), f"unclosed quote in {inst}"
            value += "\n" + lines[i]
            i += 1
            value = value.strip()
        value = _unquote(value)
        if inst == "PARAMETER":
            PARAMETERS[name](value)  # the documented value type
        out.append((name, value))
    assert [n for n, _ in out].count("FROM") == 1, "exactly one FROM"
    return out


def test_the_syntax_check_rejects_what_ollama_rejects():
    good = 'FROM /x.gguf\nPARAMETER stop "<|im_end|>"\nTEMPLATE """a\nb"""\n'
    assert parse_modelfile(good)[-1] == ("TEMPLATE", "a\nb")
    for bad in ('FROM x\nPARAMETER min_k 3\n', 'FROM x\nPARAMETER top_k 0.5\n',
                'FROM x\nTEMPLATE """open\n', 'FROM x\nRENDER y\n', 'SYSTEM hi\n'):
        with pytest.raises((AssertionError, ValueError)):
            parse_modelfile(bad)


# -- the Modelfile -------------------------------------------------------------------------
def _handoff(run: str = "r", **cfg):
    return handoff.export_to(run, ExportConfig(quant="q4_k_m"), HandoffConfig(**cfg))


def test_modelfile_for_smollm2_chatml(monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")  # no ollama here
    root = make_run("r")
    res = _handoff(to="ollama")
    text = (root / "ollama" / "Modelfile").read_text()
    cmds = parse_modelfile(text)
    params = [(n, v) for n, v in cmds if n in PARAMETERS]
    assert dict(cmds)["FROM"] == str((root / "gguf" / "r-q4_k_m.gguf").resolve())
    assert params == [("temperature", "1.1"), ("top_k", "20"), ("top_p", "0.8"),
                      ("min_p", "0"), ("repeat_penalty", "1"),
                      ("stop", "<|im_start|>"), ("stop", "<|im_end|>")]
    assert dict(cmds)["TEMPLATE"] == OLLAMA_CHATML
    assert dict(cmds)["SYSTEM"] == SYSTEM_PROMPT  # the run's own system message
    assert "the generic preset's T_eval" in text and "is ChatML" in text
    assert not res.ran and res.command == ["ollama", "create", "r", "-f",
                                           str(root / "ollama" / "Modelfile")]


def test_measured_decoding_and_its_source_reach_the_modelfile(monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    root = make_run("r")
    man = json.loads((root / "manifest.json").read_text())
    man["measured_decoding"] = {"decoding": {"temperature": 0.7, "top_k": 0, "top_p": 0.95},
                                "benchmark": "humaneval", "problems": 164,
                                "samples_per_problem": 5, "pass@1": 0.312,
                                "measured_at": "2026-02-03T04:05:06+00:00", "extra": 1}
    (root / "manifest.json").write_text(json.dumps(man))
    _handoff(to="ollama", name="acme/coder:q4")
    text = (root / "ollama" / "Modelfile").read_text()
    params = dict((n, v) for n, v in parse_modelfile(text) if n != "stop")
    assert (params["temperature"], params["top_k"], params["top_p"]) == ("0.7", "0", "0.95")
    assert "measured best of `compare` on humaneval: pass@1 31.2% over 164 problems" in \
        " ".join(text.split())


QWEN25 = (  # Qwen2.5-Instruct's template, its tool-call branches shortened
    "{%- if tools %}{{- '<|im_start|>system\\n' }}{%- if messages[0]['role'] == 'system' %}"
    "{{- messages[0]['content'] }}{%- else %}{{- 'You are Qwen, created by Alibaba Cloud. You "
    "are a helpful assistant.' }}{%- endif %}{{- '\\n\\n# Tools\\n<tools>' }}{%- for tool in "
    "tools %}{{- tool | tojson }}{%- endfor %}{{- '</tools><|im_end|>\\n' }}{%- else %}"
    "{%- if messages[0]['role'] == 'system' %}{{- '<|im_start|>system\\n' + messages[0]"
    "['content'] + '<|im_end|>\\n' }}{%- else %}{{- '<|im_start|>system\\nYou are Qwen, "
    "created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\\n' }}{%- endif %}"
    "{%- endif %}{%- for message in messages %}{%- if (message.role == 'user') or "
    "(message.role == 'system' and not loop.first) or (message.role == 'assistant' and not "
    "message.tool_calls) %}{{- '<|im_start|>' + message.role + '\\n' + message.content + "
    "'<|im_end|>' + '\\n' }}{%- elif message.role == 'tool' %}{{- '<|im_start|>user\\n"
    "<tool_response>\\n' + message.content + '\\n</tool_response><|im_end|>\\n' }}{%- endif %}"
    "{%- endfor %}{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}")
THINKING = ("{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] + "
            "'<|im_end|>\\n' }}{% endfor %}{% if add_generation_prompt %}"
            "{{ '<|im_start|>assistant\\n<think>\\n' }}{% endif %}")
LLAMA3 = ("{% set loop_messages = messages %}{% for message in loop_messages %}{% set content "
          "= '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'+ "
          "message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content "
          "= bos_token + content %}{% endif %}{{ content }}{% endfor %}{% if "
          "add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}"
          "{% endif %}")
LLAMA3_TOKENS = ["<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]
SPACED = THINKING.replace("<think>\\n", "").replace("'<|im_end|>\\n'", "'<|im_end|>\\n\\n'")


@pytest.mark.parametrize("template,tokens,eos,bos,expect", [
    (SMOLLM2, None, 2, 1,  # SmolLM2's GGUF names <|im_start|> as its BOS
     (OLLAMA_CHATML, "You are a helpful AI assistant named SmolLM, trained by Hugging Face")),
    ("{{ bos_token }}" + THINKING.replace("<think>\\n", ""), ["<s>", "<|im_start|>",
                                                            "<|im_end|>"], 2, 0,
     (OLLAMA_CHATML, None)),
    (QWEN25, None, 2, None,
     (OLLAMA_CHATML, "You are Qwen, created by Alibaba Cloud. You are a helpful assistant.")),
    (THINKING, None, 2, None, (OLLAMA_CHATML + "<think>\n", None)),
    (LLAMA3, LLAMA3_TOKENS, 3, 0, (None, None)),
    (SPACED, None, 2, None, (None, None)),
    (None, None, 2, None, (None, None)),
], ids=["smollm2", "chatml-with-bos", "qwen2.5-tools", "thinking-tail", "llama3", "not-quite-chatml", "none"])
def test_template_choice(tmp_path, template, tokens, eos, bos, expect):
    kw = {"tokens": tokens} if tokens else {}
    chat = read_chat(write_gguf(tmp_path / "m.gguf", template, eos=eos, bos=bos, **kw))
    choice = ollama.choose_template(chat)
    assert (choice.go_template, choice.default_system) == expect
    if choice.go_template is None:
        assert "TEMPLATE is left out" in choice.reason
        assert choice.stops == (("<|eot_id|>",) if tokens else ("<|im_end|>",))
    else:
        assert choice.stops == ("<|im_start|>", "<|im_end|>")


def test_a_run_without_system_message_gets_the_templates_default(monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    root = make_run("r", template=QWEN25)
    man = json.loads((root / "manifest.json").read_text())
    man["config"]["sample"]["system_prompt"] = None  # a thinking preset keeps none
    (root / "manifest.json").write_text(json.dumps(man))
    _handoff(to="ollama")
    cmds = dict(parse_modelfile((root / "ollama" / "Modelfile").read_text()))
    assert cmds["SYSTEM"].startswith("You are Qwen, created by Alibaba Cloud.")


def test_llama3_omits_template_with_the_reason(monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    root = make_run("r", template=LLAMA3, tokens=LLAMA3_TOKENS, eos=3, bos=0)
    res = _handoff(to="ollama")
    text = (root / "ollama" / "Modelfile").read_text()
    cmds = parse_modelfile(text)
    assert "TEMPLATE" not in dict(cmds) and ("stop", "<|eot_id|>") in cmds
    assert "# template: the GGUF's chat template is not ChatML; TEMPLATE is left out" in text
    assert res.notes and "ollama show NAME --template" in res.notes[0]


# -- ollama create -------------------------------------------------------------------------
OLLAMA = """
args = sys.argv[1:]
mf = args[args.index("-f") + 1]
assert open(mf).read().startswith("# Ollama Modelfile"), "no Modelfile"
json.dump({"argv": args, "from": [l for l in open(mf) if l.startswith("FROM")]},
          open(os.environ["TOOL_LOG"], "w"))
print("success")
"""


def test_ollama_create_runs_when_ollama_is_installed(tmp_path):
    root = make_run("r")
    fake_tool(tmp_path / "bin", "ollama", OLLAMA)
    log = tmp_path / "ollama.json"
    r = run_cli("export", "r", "--to", "ollama", "--quant", "q4_k_m", "--name", "my-coder",
                env={"PATH": str(tmp_path / "bin"), "TOOL_LOG": str(log)}, timeout=120)
    assert r.returncode == 0, r.stderr
    called = json.loads(log.read_text())
    assert called["argv"] == ["create", "my-coder", "-f", str(root / "ollama" / "Modelfile")]
    assert called["from"] == [f"FROM {(root / 'gguf' / 'r-q4_k_m.gguf').resolve()}\n"]
    assert "created the Ollama model my-coder" in r.stdout
    assert "ollama run my-coder" in r.stdout


def test_ollama_failure_is_one_line(tmp_path):
    make_run("r")
    fake_tool(tmp_path / "bin", "ollama", 'print("Error: could not connect to ollama app, '
                                          'is it running?", file=sys.stderr); sys.exit(1)')
    r = run_cli("export", "r", "--to", "ollama", "--quant", "q4_k_m",
                env={"PATH": str(tmp_path / "bin")}, timeout=120)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines()[-1] == (
        "error: `ollama create` failed: Error: could not connect to ollama app, is it "
        "running?; is the Ollama server running? (`ollama serve`)")


def test_without_ollama_the_exact_command_is_printed(tmp_path):
    root = make_run("r")
    (tmp_path / "empty").mkdir()
    r = run_cli("export", "r", "--to", "ollama", "--quant", "q4_k_m",
                env={"PATH": str(tmp_path / "empty")}, timeout=120)
    assert r.returncode == 0, r.stderr
    out = " ".join(r.stdout.split())
    assert f"ollama create r -f {root / 'ollama' / 'Modelfile'}" in out
    assert (root / "ollama" / "Modelfile").exists()


# -- LM Studio -----------------------------------------------------------------------------
def test_lmstudio_models_folder_is_found_as_lms_finds_it(tmp_path, monkeypatch):
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("LMSTUDIO_HOME", raising=False)
    assert handoff.lmstudio_models_dir() == home.resolve() / ".lmstudio" / "models"
    (home / ".cache" / "lm-studio").mkdir(parents=True)
    assert handoff.lmstudio_home() == home.resolve() / ".cache" / "lm-studio"
    (home / ".lmstudio-home-pointer").write_text(str(tmp_path / "elsewhere") + "\n")
    assert handoff.lmstudio_home() == tmp_path / "elsewhere"
    lm = tmp_path / "lm"
    lm.mkdir()
    monkeypatch.setenv("LMSTUDIO_HOME", str(lm))
    assert handoff.lmstudio_models_dir() == lm.resolve() / "models"
    (lm / "settings.json").write_text(json.dumps({"downloadsFolder": str(tmp_path / "big")}))
    assert handoff.lmstudio_models_dir() == tmp_path / "big"  # the app's models directory


def test_lmstudio_placement_links_replaces_and_is_atomic(tmp_path):
    root = make_run("r")
    (tmp_path / "empty").mkdir()
    lm = tmp_path / "lm"
    lm.mkdir()
    models = tmp_path / "models"
    (lm / "settings.json").write_text(json.dumps({"downloadsFolder": str(models)}))
    env = {"PATH": str(tmp_path / "empty"), "LMSTUDIO_HOME": str(lm)}
    r = run_cli("export", "r", "--to", "lmstudio", "--quant", "q4_k_m", env=env, timeout=120)
    assert r.returncode == 0, r.stderr
    placed = models / "ssd-local" / "r" / "r-q4_k_m.gguf"
    src = root / "gguf" / "r-q4_k_m.gguf"
    assert os.path.samefile(placed, src) and "hard link" in r.stdout
    assert "temperature 1.1" in " ".join(r.stdout.split())
    r = run_cli("export", "r", "--to", "lmstudio", "--quant", "q4_k_m", env=env, timeout=120)
    assert "already in LM Studio's models folder" in r.stdout
    # the run's GGUF is rewritten (a new file renamed over it, as compare does): replaced
    write_gguf(src.with_name("new.gguf"), SMOLLM2, pad=b"new")
    os.replace(src.with_name("new.gguf"), src)
    from ssd_local.app.runs import Run

    Run.load("r").record_artefact("gguf/r-q4_k_m.gguf", quant="q4_k_m")
    r = run_cli("export", "r", "--to", "lmstudio", "--quant", "q4_k_m", env=env, timeout=120)
    assert r.returncode == 0, r.stderr
    assert os.path.samefile(placed, src) and b"new".hex().encode() in placed.read_bytes()
    assert [p.name for p in placed.parent.iterdir()] == ["r-q4_k_m.gguf"]  # no temporary
    # --name and --lmstudio-models place it elsewhere
    r = run_cli("export", "r", "--to", "lmstudio", "--quant", "q4_k_m", "--name", "me/coder",
                "--lmstudio-models", str(tmp_path / "other"), env=env, timeout=120)
    assert r.returncode == 0, r.stderr
    assert os.path.samefile(tmp_path / "other" / "me" / "coder" / "r-q4_k_m.gguf", src)


def test_copy_fallback_never_leaves_a_partial_file(tmp_path, monkeypatch):
    src = write_gguf(tmp_path / "a.gguf", SMOLLM2)
    target = tmp_path / "m" / "p" / "x" / "a.gguf"

    def no_link(*a):
        raise OSError(18, "Invalid cross-device link")

    monkeypatch.setattr(handoff.os, "link", no_link)
    assert handoff.place(src, target) == "copy"
    assert target.read_bytes() == src.read_bytes() and not os.path.samefile(src, target)
    assert [p.name for p in target.parent.iterdir()] == ["a.gguf"]
    real_replace = os.replace

    def fail(a, b):  # the rename fails: the old file stays whole, no temporary is left
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(handoff.os, "replace", fail)
    from ssd_local.errors import UserError

    with pytest.raises(UserError, match="cannot write"):
        handoff.place(write_gguf(tmp_path / "b.gguf", SMOLLM2, pad=b"b"), target)
    monkeypatch.setattr(handoff.os, "replace", real_replace)
    assert target.read_bytes() == src.read_bytes()
    assert [p.name for p in target.parent.iterdir()] == ["a.gguf"]


LMS = """
args = sys.argv[1:]
json.dump(args, open(os.environ["TOOL_LOG"], "w"))
user_repo = args[args.index("--user-repo") + 1]
src = args[-1]
dest = os.path.join(os.environ["LMSTUDIO_HOME"], "models", user_repo, os.path.basename(src))
os.makedirs(os.path.dirname(dest), exist_ok=True)
os.link(src, dest)
print("Hard link created at", dest)
"""


def test_lms_import_is_used_when_present(tmp_path):
    root = make_run("r")
    fake_tool(tmp_path / "bin", "lms", LMS)
    log, lm = tmp_path / "lms.json", tmp_path / "lm"
    lm.mkdir()
    r = run_cli("export", "r", "--to", "lmstudio", "--quant", "q4_k_m",
                env={"PATH": str(tmp_path / "bin"), "LMSTUDIO_HOME": str(lm),
                     "TOOL_LOG": str(log)}, timeout=120)
    assert r.returncode == 0, r.stderr
    src = root / "gguf" / "r-q4_k_m.gguf"
    assert json.loads(log.read_text()) == ["import", "-y", "--user-repo", "ssd-local/r",
                                           "--hard-link", str(src)]
    assert os.path.samefile(lm / "models" / "ssd-local" / "r" / "r-q4_k_m.gguf", src)
    assert "imported with `lms import --hard-link`" in r.stdout


# -- user mistakes -------------------------------------------------------------------------
def _one_error(r) -> str:
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert "Traceback" not in r.stderr
    lines = [x for x in r.stderr.strip().splitlines() if x.startswith("error:")]
    assert len(lines) == 1, r.stderr
    return lines[0]


def test_handoff_mistakes_are_one_line(tmp_path):
    make_run("r")
    env = {"PATH": str(tmp_path)}
    assert "not a publisher/model pair" in _one_error(run_cli(
        "export", "r", "--to", "lmstudio", "--name", "just-a-name", env=env, timeout=120))
    assert "not an Ollama model name" in _one_error(run_cli(
        "export", "r", "--to", "ollama", "--name", "bad name!", env=env, timeout=120))
    r = run_cli("export", "r", "--to", "nowhere", env=env, timeout=120)
    assert r.returncode == 2 and "invalid choice" in r.stderr  # argparse's own line
    root = make_run("bare", quants=())
    import shutil

    shutil.rmtree(root / "merged")
    assert "no merged model yet" in _one_error(run_cli(
        "export", "bare", "--to", "ollama", env=env, timeout=120))


def test_the_real_smollm2_gguf(smollm2, monkeypatch):
    """The embedded SmolLM2-135M-Instruct GGUF (98 MB, its real header and vocabulary) as a
    run's GGUF: its template is found ChatML and the Modelfile is the one above."""
    monkeypatch.setenv("PATH", "/nonexistent")
    root = make_run("r")
    gguf = root / "gguf" / "r-q4_k_m.gguf"
    gguf.unlink()
    os.link(smollm2, gguf)
    from ssd_local.app.runs import Run

    Run.load("r").record_artefact("gguf/r-q4_k_m.gguf", quant="q4_k_m")
    chat = read_chat(gguf)
    assert (chat.eos, chat.meta["general.architecture"]) == ("<|im_end|>", "llama")
    assert chat.template == SMOLLM2
    _handoff(to="ollama")
    cmds = dict(parse_modelfile((root / "ollama" / "Modelfile").read_text()))
    assert cmds["TEMPLATE"] == OLLAMA_CHATML and cmds["SYSTEM"] == SYSTEM_PROMPT
