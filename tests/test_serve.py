"""`ssd-local serve` on llama.cpp's own server (xllamacpp in a child process), through the
real `openai` client: the paper's decoding order for a request that sets no sampling
(proved on the server's own probabilities), concurrent streams that overlap and all
finish, tools refused with a 400 by a template without them and parsed into `tool_calls`
from a hand-wired tiny model whose template has them; streaming, stop, seed, max_tokens,
logprobs, /v1/models, /health, /metrics. Also: the slot rule, the doctor's offload
warnings and the Makefile's choice of llama.cpp builds per platform (`make -n`)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from conftest import ROOT

GiB = 2**30


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve(target: str, home: Path, *extra: str) -> tuple[subprocess.Popen, str]:
    """`ssd-local serve TARGET` on a free port; (process, base URL) once /health answers."""
    port = free_port()
    log = open(home / f"serve-{port}.out", "w")
    proc = subprocess.Popen([sys.executable, "-m", "ssd_local.cli", "serve", target, "--port",
                             str(port), *extra], cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                            env=dict(os.environ, SSD_LOCAL_HOME=str(home)))
    deadline = time.time() + 180
    while time.time() < deadline:
        assert proc.poll() is None, (home / f"serve-{port}.out").read_text()
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2)
            return proc, f"http://127.0.0.1:{port}/v1"
        except OSError:
            time.sleep(0.3)
    proc.kill()
    raise AssertionError("ssd-local serve did not start")


def stop(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGINT)  # Ctrl-C
    assert proc.wait(timeout=30) == 0


def post(url: str, body: dict) -> dict:
    req = urllib.request.Request(url, data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=300) as r:
        return json.loads(r.read())


@pytest.fixture(scope="module")
def smol_server(smollm2, tmp_path_factory):
    proc, url = serve("smollm2-135m", tmp_path_factory.mktemp("serve-home"), "--slots", "4")
    yield url
    stop(proc)


@pytest.fixture
def client(smol_server):
    from openai import OpenAI

    return OpenAI(base_url=smol_server, api_key="none", max_retries=0)


# -- the paper's order --------------------------------------------------------------------------
def paper_chain(logprobs: dict[int, float], d) -> dict[int, float]:
    """Our own chain (the lens's ``truncate``: temperature, then top-k, then top-p) on the
    model's probabilities, renormalized over the tokens it keeps."""
    from ssd_local.app.lens.stats import truncate

    ids = np.array(list(logprobs))
    row = np.array([list(logprobs.values())])
    _, cand, n_keep = truncate(row, d)
    kept = cand[0, :n_keep[0]]
    z = row[0, kept] / d.temperature
    p = np.exp(z - z.max())
    return dict(zip(ids[kept].tolist(), (p / p.sum()).tolist()))


def other_order(logprobs: dict[int, float], d) -> dict[int, float]:
    """llama.cpp's default relative order: top-k, then top-p at T = 1, then temperature."""
    ids, lp = np.array(list(logprobs)), np.array(list(logprobs.values()))
    order = np.argsort(-lp, kind="stable")[:d.top_k]
    p = np.exp(lp[order] - lp[order].max())
    cum = np.cumsum(p / p.sum())
    order = order[:int(np.searchsorted(cum, d.top_p) + 1)]
    z = lp[order] / d.temperature
    q = np.exp(z - z.max())
    return dict(zip(ids[order].tolist(), (q / q.sum()).tolist()))


@pytest.mark.slow
def test_a_request_without_sampling_is_decoded_in_the_papers_order(smol_server):
    """Two identical requests that set no sampling, only a seed: one returns the server's
    post-sampling candidates (the distribution each token was drawn from), the other the
    model's raw top-64 probabilities. Our chain on the latter equals the former, token by
    token: the same kept set, probabilities within 1e-5 (same engine, same logits; the
    measured gap is ~5e-7). The other order does not match, so the check can tell."""
    from ssd_local.app.serving import plan

    d = plan("smollm2-135m").decoding.decoding  # what `serve` took as the defaults
    assert 0 < d.temperature != 1 and 0 < d.top_k <= 64 and d.top_p < 1
    body = {"prompt": "<|im_start|>user\nWrite a haiku about rust.<|im_end|>\n"
                      "<|im_start|>assistant\n", "max_tokens": 24, "seed": 1234, "logprobs": 64}
    url = smol_server + "/completions"
    post_ = post(url, dict(body, post_sampling_probs=True))["choices"][0]["logprobs"]["content"]
    pre = post(url, body)["choices"][0]["logprobs"]["content"]
    assert [t["id"] for t in post_] == [t["id"] for t in pre] and len(pre) >= 8
    differs = 0
    for got, raw in zip(post_, pre):
        server = {t["id"]: t["prob"] for t in got["top_probs"]}
        model = {t["id"]: t["logprob"] for t in raw["top_logprobs"]}
        ours = paper_chain(model, d)
        assert set(server) == set(ours) and got["id"] in ours
        assert max(abs(server[i] - ours[i]) for i in ours) < 1e-5
        differs += set(other_order(model, d)) != set(server)
    assert differs > 0


# -- parallel clients ---------------------------------------------------------------------------
@pytest.mark.slow
def test_four_streaming_clients_overlap_and_all_finish(client):
    spans: dict[int, list[float]] = {}
    texts: dict[int, str] = {}
    finish: dict[int, str | None] = {}
    errors: list[BaseException] = []

    def one(i: int) -> None:
        try:
            stream = client.chat.completions.create(
                model="smollm2-135m", stream=True, max_tokens=24, extra_body={"ignore_eos": True},
                messages=[{"role": "user", "content": f"Write Python function number {i}."}])
            texts[i] = ""
            for chunk in stream:
                if chunk.choices and chunk.choices[0].delta.content:
                    spans.setdefault(i, []).append(time.perf_counter())
                    texts[i] += chunk.choices[0].delta.content
                if chunk.choices and chunk.choices[0].finish_reason:
                    finish[i] = chunk.choices[0].finish_reason
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=600)
    assert not errors, errors
    assert finish == {i: "length" for i in range(4)}  # nobody was cut off
    assert all(len(spans[i]) >= 10 and texts[i].strip() for i in range(4))
    # every stream was still producing tokens when each of the others had started
    assert max(s[0] for s in spans.values()) < min(s[-1] for s in spans.values())


# -- tools ------------------------------------------------------------------------------------
WEATHER = [{"type": "function", "function": {
    "name": "get_weather", "description": "the weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                   "required": ["city"]}}}]


@pytest.mark.slow
@pytest.mark.parametrize("choice", ["auto", "required", "none"])
def test_tools_on_a_template_without_them_are_refused_by_name(client, choice):
    from openai import BadRequestError

    with pytest.raises(BadRequestError) as err:
        client.chat.completions.create(model="smollm2-135m", max_tokens=8, tools=WEATHER,
                                       tool_choice=choice,
                                       messages=[{"role": "user", "content": "Paris?"}])
    assert err.value.status_code == 400
    assert "tools are not supported" in str(err.value) and "smollm2-135m" in str(err.value)


# -- the rest of the API, through the openai client --------------------------------------------
@pytest.mark.slow
def test_models_health_metrics_max_tokens_stop_seed_logprobs_streaming(client, smol_server):
    root = smol_server.rsplit("/v1", 1)[0]
    assert [m.id for m in client.models.list()] == ["smollm2-135m"]
    assert json.loads(urllib.request.urlopen(root + "/health").read())["status"] == "ok"
    assert "llamacpp:requests_processing" in urllib.request.urlopen(root + "/metrics").read(
        ).decode()
    msgs = [{"role": "user", "content": "Count from 1 to 30, one number per line."}]
    r = client.chat.completions.create(model="smollm2-135m", messages=msgs, max_tokens=5,
                                       temperature=0.0, extra_body={"ignore_eos": True})
    assert r.usage.completion_tokens == 5 and r.choices[0].finish_reason == "length"
    full = client.chat.completions.create(model="smollm2-135m", messages=msgs, max_tokens=40,
                                          temperature=0.0).choices[0].message.content
    cut = full[len(full) // 2:][:3]
    assert cut.strip()
    r = client.chat.completions.create(model="smollm2-135m", messages=msgs, max_tokens=40,
                                       temperature=0.0, stop=[cut])
    assert r.choices[0].message.content == full[:full.index(cut)]
    assert r.choices[0].finish_reason == "stop"
    hot = dict(model="smollm2-135m", max_tokens=16, temperature=1.0,
               messages=[{"role": "user", "content": "Name a fruit."}])
    same = {client.chat.completions.create(seed=7, **hot).choices[0].message.content
            for _ in range(2)}
    others = {client.chat.completions.create(seed=s, **hot).choices[0].message.content
              for s in (8, 9, 10)}
    assert len(same) == 1 and others - same
    r = client.chat.completions.create(model="smollm2-135m", messages=msgs, max_tokens=6,
                                       logprobs=True, top_logprobs=3)
    lp = r.choices[0].logprobs.content
    assert len(lp) == r.usage.completion_tokens and all(
        len(t.top_logprobs) == 3 and t.logprob <= 0 for t in lp)
    streamed = "".join(c.choices[0].delta.content or "" for c in client.chat.completions.create(
        model="smollm2-135m", messages=msgs, max_tokens=40, temperature=0.0, stream=True)
        if c.choices)
    assert streamed == full
    comp = client.completions.create(model="smollm2-135m", prompt="def add(a, b):",
                                     max_tokens=8)
    assert comp.choices[0].text and comp.usage.completion_tokens <= 8


# -- a tool-capable model, hand-wired to call a tool ---------------------------------------
# Our own Qwen-style template: tools listed in the system turn, calls written as
# <tool_call>{json}</tool_call>, tool results sent back as <tool_response> in a user turn.
TOOLS_TEMPLATE = """\
{%- set sys_text = messages[0].content if messages and messages[0].role == 'system' else '' -%}
{%- if tools -%}
<|im_start|>system
{% if sys_text %}{{ sys_text }}

{% endif %}You can call functions. Their signatures, one JSON object a line:
<tools>
{% for t in tools %}{{ t | tojson }}
{% endfor %}</tools>
To call one, answer with <tool_call>
{"name": NAME, "arguments": ARGS}
</tool_call><|im_end|>
{% elif sys_text -%}
<|im_start|>system
{{ sys_text }}<|im_end|>
{% endif -%}
{%- for m in messages -%}
{%- if m.role == 'user' or (m.role == 'system' and not loop.first) -%}
<|im_start|>{{ m.role }}
{{ m.content }}<|im_end|>
{% elif m.role == 'assistant' -%}
<|im_start|>assistant
{% if m.content %}{{ m.content }}{% endif -%}
{%- for call in (m.tool_calls or []) -%}
{%- set f = call.function if call.function is defined else call -%}
{% if not loop.first or m.content %}
{% endif %}<tool_call>
{"name": "{{ f.name }}", "arguments": {{ f.arguments if f.arguments is string else \
f.arguments | tojson }}}
</tool_call>
{%- endfor %}<|im_end|>
{% elif m.role == 'tool' -%}
<|im_start|>user
<tool_response>
{{ m.content }}
</tool_response><|im_end|>
{% endif -%}
{%- endfor -%}
{%- if add_generation_prompt -%}
<|im_start|>assistant
{% endif -%}
"""
# What the model writes. A bigram chain needs every token once: "<tool_call>" and
# "</tool_call>" are added tokens (as in Qwen's vocabulary), the first "\n" of the text is
# the prompt's own last token, so the call's line breaks are "\n\n" and " \n".
CALL = '<tool_call>\n\n{"name": "get_weather","arguments": {"city":"Paris"}} \n</tool_call>'


def unique_tokens(tok, text: str, used: set[int]) -> list[int]:
    """A spelling of ``text`` in ``tok``'s vocabulary that uses no token twice (depth
    first, longest pieces first)."""
    pieces: dict[str, int] = {}
    for i in range(len(tok)):
        s = tok.decode([i])
        if s and not tok.convert_ids_to_tokens(i).startswith("<|"):
            pieces.setdefault(s, i)

    def walk(pos: int) -> list[int] | None:
        if pos == len(text):
            return []
        for n in range(min(40, len(text) - pos), 0, -1):
            i = pieces.get(text[pos:pos + n])
            if i is None or i in used:
                continue
            used.add(i)
            rest = walk(pos + n)
            if rest is not None:
                return [i] + rest
            used.discard(i)
        return None

    ids = walk(0)
    assert ids is not None and tok.decode(ids) == text
    return ids


@pytest.fixture(scope="module")
def tool_model(smollm2, tmp_path_factory):
    """A tiny Llama (2 layers, hidden 32) with SmolLM2's tokenizer and the template above,
    wired as a bigram chain (attention and MLP outputs zero; each chain token has its own
    embedding axis, which the output layer maps to the next token): after the generation
    prompt it writes ``CALL`` and ends, at any temperature. Converted to GGUF by llama.cpp's
    converter."""
    pytest.importorskip("torch")
    import torch
    from transformers import AddedToken, AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from ssd_local.backends.converter import convert

    tok = AutoTokenizer.from_pretrained(str(smollm2.parent), gguf_file=smollm2.name)
    tok.add_tokens([AddedToken(t, special=False, normalized=False)
                    for t in ("<tool_call>", "</tool_call>")])
    tok.chat_template = TOOLS_TEMPLATE
    start = tok.convert_tokens_to_ids("Ċ")  # "\n", where the generation prompt ends
    chain = [start] + unique_tokens(tok, CALL, {start, tok.eos_token_id}) + [tok.eos_token_id]
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64,
                      num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                      max_position_embeddings=2048, eos_token_id=tok.eos_token_id,
                      bos_token_id=tok.bos_token_id, tie_word_embeddings=False)
    torch.manual_seed(0)
    model = LlamaForCausalLM(cfg)
    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        model.lm_head.weight.zero_()
        for axis, (cur, nxt) in enumerate(zip(chain, chain[1:])):
            model.model.embed_tokens.weight[cur] = 0.0
            model.model.embed_tokens.weight[cur, axis] = 1.0
            model.lm_head.weight[nxt, axis] = 10.0
    out = tmp_path_factory.mktemp("tool-model")
    model.save_pretrained(out / "hf")
    tok.save_pretrained(out / "hf")
    convert(out / "hf", out / "tiny-tools.gguf", out / "convert.log")
    return out / "tiny-tools.gguf"


@pytest.mark.slow
def test_a_tool_capable_template_gets_tool_calls(tool_model, tmp_path):
    from openai import OpenAI

    from ssd_local.backends.chat_tools import supports_tools

    assert supports_tools(tool_model)
    proc, url = serve(str(tool_model), tmp_path, "--slots", "2", "--n-ctx", "1024")
    try:
        client = OpenAI(base_url=url, api_key="none", max_retries=0)
        msgs = [{"role": "user", "content": "What is the weather in Paris?"}]
        for choice in ("auto", "required"):
            r = client.chat.completions.create(model="m", messages=msgs, tools=WEATHER,
                                               tool_choice=choice, max_tokens=64)
            call = r.choices[0].message.tool_calls[0]
            assert r.choices[0].finish_reason == "tool_calls"
            assert call.function.name == "get_weather"
            assert json.loads(call.function.arguments) == {"city": "Paris"}
        parts = [c.choices[0].delta.tool_calls for c in client.chat.completions.create(
            model="m", messages=msgs, tools=WEATHER, max_tokens=64, stream=True)
            if c.choices and c.choices[0].delta.tool_calls]
        # the deltas of the first call (index 0); the model may go on to a second call
        args = "".join(d.function.arguments or "" for p in parts for d in p if d.index == 0)
        assert parts[0][0].function.name == "get_weather" and json.loads(args) == {
            "city": "Paris"}
        r = client.chat.completions.create(model="m", messages=msgs, tools=WEATHER,
                                           tool_choice="none", max_tokens=64)
        assert not r.choices[0].message.tool_calls and "<tool_call>" in r.choices[
            0].message.content
    finally:
        stop(proc)
    out = next(tmp_path.glob("serve-*.out")).read_text()
    assert "tools: the template takes them" in out.replace("\n", " ")


# -- quick: the rules, the doctor, the Makefile ---------------------------------------------------
def test_slots_follow_cores_memory_and_model_size():
    from ssd_local.app.serve_engine import default_slots

    kv = 180 * 2**20  # SmolLM2-135M at 8,192 tokens
    assert default_slots(2, 20 * GiB, 100 * 2**20, kv, gpu=False)[0] == 4
    assert default_slots(1, 20 * GiB, 100 * 2**20, kv, gpu=False)[0] == 2
    assert default_slots(32, 200 * GiB, 100 * 2**20, kv, gpu=False)[0] == 8
    assert default_slots(32, 80 * GiB, 100 * 2**20, kv, gpu=True)[0] == 16
    # a 7B model with 1.8 GiB of KV per slot on a 16 GiB machine: memory decides
    n, why = default_slots(16, 16 * GiB, 4 * GiB, int(1.8 * GiB), gpu=False)
    assert n == 5 and "GiB free" in why
    assert default_slots(8, 5 * GiB, 4 * GiB, 2 * GiB, gpu=False)[0] == 1
    assert default_slots(2, None, 0, None, gpu=False) == (4, "auto: 2 cores -> 4")


def test_stats_turn_metrics_into_slots_and_tokens_per_second():
    from ssd_local.app.serve_engine import StatsReader

    r = StatsReader(4)
    first = r.read({"n_decode_total": 10, "n_busy_slots_per_decode": 2.0,
                    "requests_processing": 2}, now=100.0)
    assert first.busy == 2 and first.slots == 4 and first.tokens_per_s == 0
    s = r.read({"n_decode_total": 30, "n_busy_slots_per_decode": 3.0, "requests_processing": 3,
                "requests_deferred": 1, "tokens_predicted_total": 50}, now=102.0)
    assert s.tokens_per_s == pytest.approx((90 - 20) / 2) and s.deferred == 1
    assert "3/4 slots busy, 1 waiting, 35.0 tok/s" in s.describe()


def test_template_probe_and_the_refusing_guard(smollm2):
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    from ssd_local.backends.chat_tools import refusing_template, renders_tools, supports_tools

    assert not supports_tools(smollm2)
    assert renders_tools(TOOLS_TEMPLATE)
    env = ImmutableSandboxedEnvironment()

    def raise_exception(message: str) -> None:
        raise ValueError(message)

    env.globals["raise_exception"] = raise_exception
    guarded = env.from_string(refusing_template(smollm2, "smollm2-135m"))
    msgs = [{"role": "user", "content": "hi"}]
    assert "<|im_start|>user\nhi<|im_end|>" in guarded.render(messages=msgs,
                                                               add_generation_prompt=True)
    with pytest.raises(ValueError, match="tools are not supported"):
        guarded.render(messages=msgs, tools=WEATHER, add_generation_prompt=True)


def test_doctor_warns_when_a_gpu_is_here_but_the_builds_are_cpu_only(monkeypatch):
    from ssd_local.app import doctor
    from ssd_local.backends import probe

    monkeypatch.setattr(probe, "server_gpus", lambda: [])
    monkeypatch.setattr(probe, "llama_cpp_offload", lambda: False)
    monkeypatch.setattr(probe, "nvidia_present", lambda: True)
    d = doctor.diagnose()
    rows = dict(d.rows)
    assert "CPU-only build" in rows["serving engine"] and rows["llama-cpp-python"] == \
        "CPU-only build"
    warnings = [m for m in d.missing if m.startswith("WARNING: a GPU is here")]
    assert len(warnings) == 2 and "xllamacpp/whl/cu128" in warnings[0]
    assert "-DGGML_CUDA=on" in warnings[1]
    monkeypatch.setattr(probe, "server_gpus", lambda: ["CUDA0 (NVIDIA H200)"])
    monkeypatch.setattr(probe, "llama_cpp_offload", lambda: True)
    d = doctor.diagnose()
    assert "offloads to CUDA0 (NVIDIA H200)" in dict(d.rows)["serving engine"]
    assert not [m for m in d.missing if m.startswith("WARNING")]


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
@pytest.mark.parametrize("platform, cmake, wheel", [
    ("UNAME_S=Darwin UNAME_M=arm64 NVCC= NVIDIA_SMI=", "-DGGML_METAL=on", "pypi"),
    ("UNAME_S=Linux UNAME_M=x86_64 NVCC=/usr/local/cuda/bin/nvcc "
     "NVIDIA_SMI=/usr/bin/nvidia-smi", "-DGGML_CUDA=on", "xllamacpp/whl/cu128"),
    ("UNAME_S=Linux UNAME_M=x86_64 NVCC= NVIDIA_SMI=/usr/bin/nvidia-smi", "-DGGML_NATIVE=OFF",
     "xllamacpp/whl/cu128"),
    # a CUDA toolkit without a GPU driver (a build container, say): no CUDA build
    ("UNAME_S=Linux UNAME_M=x86_64 NVCC=/usr/local/cuda/bin/nvcc NVIDIA_SMI=",
     "-DGGML_NATIVE=OFF", "pypi"),
])
def test_make_setup_picks_the_llama_cpp_builds_for_the_platform(platform, cmake, wheel):
    r = subprocess.run(["make", "-n", "-B", "setup", *platform.split()], cwd=ROOT,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    build = [line for line in r.stdout.splitlines() if "CMAKE_ARGS=" in line]
    assert len(build) == 1 and f'CMAKE_ARGS="{cmake}' in build[0]
    assert all(flag not in build[0] for flag in {"-DGGML_METAL=on", "-DGGML_CUDA=on",
                                                  "-DGGML_NATIVE=OFF"} - {cmake})
    xl = [line for line in r.stdout.splitlines() if "pip install" in line and "xllamacpp==" in line]
    assert len(xl) == 1
    assert ("--index-url" not in xl[0]) if wheel == "pypi" else (
        wheel in xl[0] and "--force-reinstall" in xl[0])
    pkg = [line for line in r.stdout.splitlines() if "install -q -e" in line]
    assert len(pkg) == 1 and ('"mlx[cpu]"' in pkg[0]) == ("Darwin" not in platform)
