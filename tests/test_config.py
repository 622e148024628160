import pytest

from ssd_local.config import PRESETS, SYSTEM_PROMPT, SampleConfig, detect_preset
from ssd_local.errors import UserError
from ssd_local.cli import build_parser


@pytest.mark.parametrize("name, preset", [
    ("Qwen3-4B-Instruct-2507", "qwen3-instruct"),
    ("Qwen/Qwen3-30B-A3B-Instruct-2507", "qwen3-30b-instruct"),
    ("Qwen3-4B-Thinking-2507", "qwen3-thinking"),
    ("Qwen3-30B-A3B-Thinking-2507", "qwen3-30b-thinking"),
    ("Meta-Llama-3.1-8B-Instruct", "llama3-instruct"),
    ("gpt-oss-20b", "gpt-oss"),
    ("smollm2-135m", "generic"),
])
def test_detect_preset(name, preset):
    assert detect_preset(name) == preset


def test_paper_table_values():
    assert PRESETS["qwen3-instruct"].train.describe() == "T=1.6 top-k=20 top-p=0.8"
    assert PRESETS["llama3-instruct"].train.describe() == "T=0.8 top-k=20 top-p=0.8"
    assert PRESETS["gpt-oss"].train.describe() == "T=1.2 top-k=off top-p=off"
    assert PRESETS["qwen3-30b-instruct"].eval.temperature == 0.9


def test_resolve_fills_from_preset_and_keeps_explicit_values():
    cfg = SampleConfig(temperature=0.5).resolve("Qwen3-4B-Instruct-2507")
    assert (cfg.preset, cfg.temperature, cfg.top_k, cfg.top_p) == ("qwen3-instruct", 0.5, 20, 0.8)
    assert cfg.system_prompt == SYSTEM_PROMPT
    thinking = SampleConfig().resolve("Qwen3-4B-Thinking-2507")
    assert thinking.system_prompt is None  # native template, no system message
    assert thinking.decoding.describe() == "T=1.1 top-k=20 top-p=0.95"


@pytest.mark.parametrize("kwargs, words", [
    ({"temperature": -1}, "--temperature"),
    ({"top_p": 0}, "--top-p"),
    ({"top_p": 1.5}, "--top-p"),
    ({"top_k": -3}, "--top-k"),
    ({"samples_per_prompt": 0}, "--samples-per-prompt"),
    ({"max_new_tokens": 0}, "--max-new-tokens"),
    ({"limit": 0}, "--limit"),
    ({"preset": "nope"}, "choose one of"),
])
def test_impossible_settings_name_the_fix(kwargs, words):
    with pytest.raises(UserError, match=words):
        SampleConfig(**kwargs).validate()


def test_cli_options_are_generated_from_the_config_fields():
    from dataclasses import fields

    parser = build_parser()
    sample = parser._subparsers._group_actions[0].choices["sample"]
    dests = {a.dest: a for a in sample._actions}
    for f in fields(SampleConfig):
        if f.metadata.get("cli", True):
            assert f.name in dests, f.name
            assert dests[f.name].default == f.default
