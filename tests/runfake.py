"""A finished run built directly on disk, for the hand-off tests: a manifest with every
stage done, a merged folder, and tiny GGUF files that hold only the metadata the hand-offs
read (chat template, special tokens, architecture), written with the ``gguf`` package and
recorded as the run's artefacts, so ``export`` finds nothing to redo."""

from __future__ import annotations

import json
from pathlib import Path

from ssd_local.config import SYSTEM_PROMPT

SMOLLM2 = ("{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' "
           "%}{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by "
           "Hugging Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + "
           "message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt "
           "%}{{ '<|im_start|>assistant\n' }}{% endif %}")
CHATML_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]


def write_gguf(path: Path, template: str | None, tokens: list[str] = CHATML_TOKENS,
               eos: int = 2, bos: int | None = None, arch: str = "llama",
               pad: bytes = b"") -> Path:
    """A GGUF with metadata only (no tensors); ``pad`` is appended to vary its content."""
    from gguf import GGUFWriter

    path.parent.mkdir(parents=True, exist_ok=True)
    w = GGUFWriter(str(path), arch)
    if template is not None:
        w.add_chat_template(template)
    w.add_token_list(tokens)
    w.add_eos_token_id(eos)
    if bos is not None:
        w.add_bos_token_id(bos)
    if pad:
        w.add_string("test.pad", pad.hex())
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def make_run(name: str, template: str | None = SMOLLM2, quants: tuple[str, ...] = ("q4_k_m",),
             model: dict | None = None, **gguf_kw) -> Path:
    """A run with every stage done and a GGUF per quant type; returns its folder."""
    from ssd_local.app.runs import Run, runs_root

    root = runs_root() / name
    (root / "merged").mkdir(parents=True)
    (root / "merged" / "config.json").write_text(json.dumps({"model_type": "llama"}))
    (root / "merged" / "model.safetensors").write_bytes(b"\0" * 4096)
    (root / "merged" / "tokenizer.json").write_text('{"version": "1.0"}')
    model = model or {"ref": "smollm2-135m", "kind": "gguf", "path": "/x/SmolLM2.gguf",
                      "name": "smollm2-135m", "source": "embedded", "repo_id": None,
                      "identity": "embedded:smollm2-135m"}
    manifest = {
        "format": 1, "name": name, "created": "2026-01-01T00:00:00+00:00", "model": model,
        "config": {"sample": {"prompts": "builtin", "limit": 24, "preset": "generic",
                              "samples_per_prompt": 1, "max_new_tokens": 160,
                              "temperature": 1.0, "top_k": 20, "top_p": 0.8,
                              "system_prompt": SYSTEM_PROMPT},
                   "train": {"full": False, "lora_rank": 16, "lora_alpha": 32,
                             "lora_targets": "all-linear", "lr": 0.0002, "max_steps": 6,
                             "effective_batch": 8, "backend": "torch"}},
        "stages": {"sample": {"state": "done", "summary": {
                       "samples": 24, "prompts": 24, "empty": 0, "stub": 0, "looped": 0,
                       "length_capped": 19, "with_code": 24}},
                   "train": {"state": "done", "summary": {"steps": 6, "train_loss": 0.4933,
                                                          "val_loss": None, "tokens": 1234}},
                   "fuse": {"state": "done"}, "export": {"state": "done"}},
        "artefacts": {}, "recommended_decoding": {"temperature": 1.1, "top_k": 20,
                                                  "top_p": 0.8},
        "versions": {"ssd-local": "0.1.0", "torch": "2.13.0", "transformers": "4.99.0"}}
    (root / "manifest.json").write_text(json.dumps(manifest))
    run = Run.load(name)
    for q in quants:
        write_gguf(root / "gguf" / f"{name}-{q}.gguf", template, **gguf_kw)
        run.record_artefact(f"gguf/{name}-{q}.gguf", quant=q)
    return root


def fake_tool(bindir: Path, name: str, body: str) -> Path:
    """An executable ``name`` on ``bindir`` that runs the Python ``body`` (argv in
    ``sys.argv``); it may read TOOL_LOG from the environment to record its calls."""
    import sys

    bindir.mkdir(parents=True, exist_ok=True)
    exe = bindir / name
    exe.write_text(f"#!{sys.executable}\nimport json, os, sys\n{body}\n")
    exe.chmod(0o755)
    return exe
