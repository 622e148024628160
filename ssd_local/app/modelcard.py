"""The model card ``push`` uploads as the repo's README.md: YAML front matter the Hub reads
(``base_model``, ``base_model_relation``, ``tags``, ``library_name``, ``pipeline_tag``) and a
body that states the recipe, the decoding and what ``compare`` measured, from the run's
manifest and its ``evals/compare-*.json`` (read tolerantly: a missing or extra field of
either never breaks a card).

``base_model`` is the hub id the run started from: the repo of a hub model (or of a hub
GGUF), the embedded SmolLM2's origin, or the repo of a local folder inside the Hugging Face
cache (``models--ORG--NAME/snapshots/...``). A model known by a local path only gets no
``base_model`` (the Hub rejects ids that do not exist) and is named in the body instead.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from . import decoding
from .runs import Run

EMBEDDED_HUB_IDS = {"smollm2-135m": "HuggingFaceTB/SmolLM2-135M-Instruct"}
_HF_CACHE = re.compile(r"models--([^/\\]+?)--([^/\\]+)[/\\]snapshots[/\\]")
TAGS = ("ssd", "self-distillation", "code", "ssd-local")


def base_model(model: dict[str, Any]) -> tuple[str | None, str]:
    """(hub id or None, the base model in words) for a manifest's ``model`` record."""
    name, path = model.get("name", "?"), str(model.get("path", ""))
    if model.get("source") == "hub" and model.get("repo_id"):
        rid = model["repo_id"]
        return rid, f"`{rid}`" + (f" (file `{Path(path).name}`)" if model.get("kind") == "gguf"
                                  else "")
    if model.get("source") == "embedded":
        rid = EMBEDDED_HUB_IDS.get(name)
        return rid, f"`{rid}` (the Q4_1 GGUF embedded in ssd-local as `{name}`)" if rid \
            else (None, f"the embedded model `{name}`")
    m = _HF_CACHE.search(path)
    if m:
        rid = f"{m.group(1)}/{m.group(2)}"
        return rid, f"`{rid}` (a copy in the Hugging Face cache)"
    what = "GGUF file" if model.get("kind") == "gguf" else "folder"
    return None, f"a local {what} `{Path(path).name}` (not on the Hub)"


def family(run: Run, arch: str | None) -> str | None:
    """The base's family: the merged config's ``model_type``, else the GGUF architecture."""
    try:
        mt = json.loads((run.path / "merged" / "config.json").read_text()).get("model_type")
    except (OSError, ValueError):
        mt = None
    return mt or arch


def front_matter(run: Run, ggufs: dict[str, Path], merged: bool, arch: str | None) -> str:
    from huggingface_hub import ModelCardData

    rid, _ = base_model(run.manifest.get("model", {}))
    tags = [*(["gguf"] if ggufs else []), *TAGS, *filter(None, [family(run, arch)])]
    data = ModelCardData(base_model=rid, library_name="transformers" if merged else "gguf",
                         pipeline_tag="text-generation", tags=list(dict.fromkeys(tags)),
                         **({"base_model_relation": "finetune"} if rid else {}))
    return f"---\n{data.to_yaml()}\n---\n"


def _get(d: dict[str, Any], *path: str) -> Any:
    for p in path:
        d = d.get(p) if isinstance(d, dict) else None  # type: ignore[assignment]
    return d


def _off(x: Any, off: Any) -> str:
    return "off" if x in (None, off) else f"{x:g}" if isinstance(x, float) else str(x)


def recipe(run: Run) -> list[str]:
    """The distillation recipe as a markdown table, from the manifest."""
    man = run.manifest
    s, t = _get(man, "config", "sample") or {}, _get(man, "config", "train") or {}
    ss, ts = _get(man, "stages", "sample", "summary") or {}, \
        _get(man, "stages", "train", "summary") or {}
    train_d = decoding.train_of(run)
    rows = [("T_train / top-k / top-p", f"{train_d.decoding.temperature:g} / "
             f"{_off(train_d.decoding.top_k, 0)} / {_off(train_d.decoding.top_p, 1.0)}"
             + (f" (the {s['preset']} preset)" if s.get("preset") else "")),
            ("prompts", f"{s.get('prompts', '?')}" + (f", first {s['limit']}"
                                                       if s.get("limit") else "")),
            ("samples", f"{ss.get('samples', '?')} ({s.get('samples_per_prompt', 1)} per "
             f"prompt, at most {s.get('max_new_tokens', '?')} new tokens; "
             f"{ss.get('empty', 0)} empty, {ss.get('stub', 0)} one-line, "
             f"{ss.get('looped', 0)} looped, {ss.get('length_capped', 0)} hit the cap)")]
    if t:
        kind = "full fine-tune" if t.get("full") else \
            f"LoRA rank {t.get('lora_rank')}, alpha {t.get('lora_alpha')} on " \
            f"{t.get('lora_targets', 'all-linear')}"
        loss = ts.get("train_loss")
        rows += [("training", f"{kind}; peak lr {t.get('lr')}, effective batch "
                  f"{t.get('effective_batch')}, {ts.get('steps', t.get('max_steps', '?'))} "
                  "steps" + (f", final train loss {loss:.4f}" if isinstance(loss, float)
                             else "") + f" ({t.get('backend') or 'torch'} backend)")]
    versions = ", ".join(f"{k} {v}" for k, v in (man.get("versions") or {}).items())
    rows.append(("package versions", versions or "?"))
    return ["| | |", "|---|---|", *(f"| {k} | {v} |" for k, v in rows)]


def _label(row: dict[str, Any]) -> str:
    if row.get("distillation"):
        return "base at the distillation settings"
    return str(row.get("model", "?")) + (" (grid)" if row.get("role") == "grid" else "")


def _pct(row: dict[str, Any], k: int) -> str:
    v = row.get(f"pass@{k}")
    if not isinstance(v, (int, float)):
        return "-"
    ci = _get(row, "ci95", f"pass@{k}")
    return f"{100 * v:.1f}%" + (f" [{100 * ci[0]:.1f}, {100 * ci[1]:.1f}]"
                                if isinstance(ci, list) and len(ci) == 2 else "")


def _same(a: dict[str, Any], b: dict[str, Any] | None) -> bool:
    return bool(b) and all(a.get(k) == b.get(k)  # type: ignore[union-attr]
                           for k in ("model", "temperature", "top_k", "top_p"))


def comparison(c: dict[str, Any]) -> list[str]:
    """One ``compare`` result as markdown: its table, differences and verdict."""
    ks = [k for k in c.get("ks") or [1] if isinstance(k, int)]
    best = (c.get("base_best"), c.get("tuned_best"))
    rows = [r for r in c.get("rows") or [] if isinstance(r, dict)
            and (r.get("role") != "grid" or any(_same(r, b) for b in best))]
    rows.sort(key=lambda r: (r.get("model") != "base", bool(r.get("distillation")),
                             r.get("temperature") or 0))
    out = [f"### {c.get('benchmark', '?')}: {c.get('problems', '?')} problems x "
           f"{c.get('samples_per_problem', '?')} samples", "",
           "| model | T | top-k | top-p | " + " | ".join(f"pass@{k} [95%]" for k in ks) + " |",
           "|---|---|---|---|" + "---|" * len(ks)]
    for r in rows:
        mark = " **(best)**" if any(_same(r, b) for b in best) else ""
        out.append(f"| {_label(r)}{mark} | {_off(r.get('temperature'), None)} | "
                   f"{_off(r.get('top_k'), 0)} | {_off(r.get('top_p'), 1.0)} | "
                   + " | ".join(_pct(r, k) for k in ks) + " |")
    diff = c.get("difference") or {}
    if diff:
        out += ["", "Tuned best minus base best: " + "; ".join(
            f"{k} {100 * v['value']:+.1f} points [{100 * v['ci95'][0]:+.1f}, "
            f"{100 * v['ci95'][1]:+.1f}]" for k, v in diff.items()
            if isinstance(v, dict) and "value" in v and len(v.get("ci95") or []) == 2) + "."]
    if c.get("verdict"):
        out += ["", f"**{c['verdict']}**"]
    return out


def comparisons(run: Run) -> list[dict[str, Any]]:
    out = []
    for p in sorted((run.path / "evals").glob("compare-*.json")):
        try:
            c = json.loads(p.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(c, dict):
            out.append(c)
    return out


def card(run: Run, repo_id: str, ggufs: dict[str, Path], merged: bool,
         arch: str | None = None) -> str:
    """The README.md ``push`` uploads (module docstring)."""
    _, base_words = base_model(run.manifest.get("model", {}))
    chosen = decoding.tuned(run)
    d = chosen.decoding
    name = repo_id.split("/")[-1]
    out = [f"# {name}", "",
           f"{name} is {base_words} after simple self-distillation (SSD): the model sampled "
           "one answer per coding problem at T_train with top-k/top-p truncation and was "
           "fine-tuned on those raw answers with plain cross-entropy (no verifier, no "
           "teacher, no RL; \"Embarrassingly Simple Self-Distillation Improves Code "
           "Generation\", Apple, 2026). Made with ssd-local from the run "
           f"`{run.name}`.", "", "## Decoding", "",
           f"Decode it at temperature {d.temperature:g}, top-k {_off(d.top_k, 0)}, top-p "
           f"{_off(d.top_p, 1.0)}, with no min-p and no repetition penalty"
           + (" (greedy)" if d.temperature == 0 else "") + f": {chosen.source}. The GGUFs "
           "carry these as `general.sampling.*`, which llama.cpp's tools use by default, "
           "with the paper's order (temperature, then top-k, then top-p) as "
           "`general.sampling.sequence`.",
           "", "## Files", "", "| file | quant | bytes | sha256 |", "|---|---|---|---|"]
    arts = run.manifest.get("artefacts", {})
    for q, p in ggufs.items():
        art = arts.get(f"gguf/{p.name}", {})
        out.append(f"| `{p.name}` | {q} | {art.get('bytes', p.stat().st_size)} | "
                   f"`{art.get('sha256', '?')}` |")
    if merged:
        out.append("| `config.json`, `*.safetensors`, tokenizer | transformers (merged) | | |")
    out += ["", "## Recipe", "", *recipe(run)]
    cs = comparisons(run)
    if cs:
        out += ["", "## Base vs distilled (`ssd-local compare`)", "",
                "Each model at each temperature of a sweep, on the same problems; pass@k "
                "with a bootstrap 95% interval; the difference is paired over problems."]
        for c in cs:
            out += ["", *comparison(c)]
    first = next(iter(ggufs.values()), None)
    out += ["", "## Use", "", "```sh"]
    if first is not None:
        out += [f"hf download {repo_id} {first.name} --local-dir .",
                f"llama-server -m {first.name}   # decodes with the settings above"]
    out += ["```"]
    if merged:
        out += ["", "```python", "from transformers import AutoModelForCausalLM, AutoTokenizer",
                f"tok = AutoTokenizer.from_pretrained(\"{repo_id}\")",
                f"model = AutoModelForCausalLM.from_pretrained(\"{repo_id}\")",
                "# generation_config.json holds the decoding above", "```"]
    out.append("")
    return front_matter(run, ggufs, merged, arch) + "\n".join(out)
