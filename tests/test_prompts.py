import json
from collections import Counter

import pytest

from ssd_local.app import prompts
from ssd_local.config import SYSTEM_PROMPT
from ssd_local.errors import UserError


def test_builtin_set_is_large_and_varied():
    ps = prompts.load("builtin")
    assert len(ps) >= 100
    assert len({p.id for p in ps}) == len(ps)
    assert len({prompts.normalise(p.text) for p in ps}) == len(ps)
    from importlib import resources

    rows = [json.loads(x) for x in resources.files("ssd_local").joinpath(
        "data/builtin_prompts.jsonl").read_text().splitlines()]
    cats = Counter(r["category"] for r in rows)
    assert set(cats) == {"function", "class", "algorithm", "string", "data", "stdio"}
    assert min(cats.values()) >= 10


def test_limit_takes_the_first_n():
    assert [p.id for p in prompts.load("builtin", limit=3)] == ["b001", "b002", "b003"]


def test_jsonl_file_with_ids_and_without(tmp_path):
    f = tmp_path / "p.jsonl"
    f.write_text('{"prompt": "Reverse a list."}\n\n{"prompt": "Sum digits.", "id": "s1"}\n')
    ps = prompts.load(str(f))
    assert [p.text for p in ps] == ["Reverse a list.", "Sum digits."]
    assert ps[1].id == "s1" and ps[0].id.startswith("p")
    # ids derived from text are stable
    assert prompts.load(str(f))[0].id == ps[0].id


def test_plain_text_file_one_problem_per_line(tmp_path):
    f = tmp_path / "p.txt"
    f.write_text("Write fizzbuzz.\nParse a date.\nWrite fizzbuzz.\n")
    assert [p.text for p in prompts.load(str(f))] == ["Write fizzbuzz.", "Parse a date."]


@pytest.mark.parametrize("content, match", [
    ('{"prompt": "ok"}\n{"prompt": "bad"\n', r"p\.jsonl:2: not valid JSON"),
    ('{"prompt": "ok"}\n{"text": "x"}\n', r'p\.jsonl:2: no "prompt" text field'),
    ('{"prompt": "a", "id": 1}\n{"prompt": "b", "id": 1}\n', r"p\.jsonl:2: duplicate id"),
])
def test_malformed_jsonl_names_the_line(tmp_path, content, match):
    f = tmp_path / "p.jsonl"
    f.write_text(content)
    with pytest.raises(UserError, match=match):
        prompts.load(str(f))


def test_missing_source_names_the_choices():
    with pytest.raises(UserError, match="use builtin, rstar"):
        prompts.load("nope.jsonl")


def _write_rstar_fixture(root):
    import pyarrow as pa
    import pyarrow.parquet as pq

    (root / "seed_sft").mkdir(parents=True)
    rows1 = [
        {"question_id": "1", "question": "Add two   numbers.", "starter_code": "",
         "response": "...", "verified": True, "is_passed": True},
        {"question_id": "2", "question": "Add two numbers.\n", "starter_code": "",
         "response": "...", "verified": True, "is_passed": True},  # whitespace duplicate
        {"question_id": "3", "question": "Failing one.", "starter_code": "",
         "response": "...", "verified": True, "is_passed": False},
    ]
    rows2 = [
        {"question_id": "4", "question": "Implement a class.",
         "starter_code": "class Solution:\n    def f(self): ...", "response": "...",
         "verified": False, "is_passed": True},
        {"question_id": "5", "question": "Add two numbers.", "starter_code": "",
         "response": "...", "verified": True, "is_passed": True},  # duplicate across files
    ]
    pq.write_table(pa.Table.from_pylist(rows1), root / "seed_sft/data-00000-of-00002.parquet")
    pq.write_table(pa.Table.from_pylist(rows2), root / "seed_sft/data-00001-of-00002.parquet")


def test_rstar_loader_on_a_local_fixture(tmp_path):
    _write_rstar_fixture(tmp_path / "rstar")
    ps = prompts.load(f"rstar:{tmp_path / 'rstar'}")
    assert [p.id for p in ps] == ["rstar-1", "rstar-4"]
    assert ps[0].text == "Add two   numbers."
    assert "```python\nclass Solution:" in ps[1].text


def test_rstar_without_network_fails_cleanly():
    # HF_HUB_OFFLINE=1 in tests: the hub path must turn into a one-line user error
    with pytest.raises(UserError, match="rStar-Coder"):
        prompts.load("rstar")


def test_messages_carry_the_system_prompt_for_instruct_models():
    p = prompts.Prompt("x", "Do it.")
    assert prompts.messages(p, SYSTEM_PROMPT)[0] == {"role": "system", "content": SYSTEM_PROMPT}
    assert prompts.messages(p, None) == [{"role": "user", "content": "Do it."}]
