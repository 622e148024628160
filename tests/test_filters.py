from ssd_local.app.filters import degeneracy, extract_code, is_looped, mark


def test_degeneracy_marks_empty_and_one_line_stubs():
    assert degeneracy("") == "empty"
    assert degeneracy("  \n\n ") == "empty"
    assert degeneracy("return x") == "stub"
    assert degeneracy("\n  pass  \n") == "stub"
    assert degeneracy("```python\nprint(1)\n```") is None


def test_repetition_loops_are_marked_but_normal_code_is_not():
    loop = "def f():\n" + "    x = x + 1\n" * 40
    assert is_looped(loop)
    assert is_looped("Sure! " + "the the the " * 40)
    code = "\n".join(f"def f{i}(a):\n    return a * {i}" for i in range(30))
    assert not is_looped(code)
    assert not is_looped("x = 1\nx = 1\n")  # too short to be a runaway loop


def test_extract_code_takes_the_last_block_and_an_unclosed_one():
    text = "a\n```python\nfirst()\n```\nb\n```\nsecond()\n```\n"
    assert extract_code(text) == "second()\n"
    assert extract_code("intro\n```python\ncut_here(") == "cut_here("
    assert extract_code("no code at all") is None
    assert mark("```python\nx=1\ny=2\n```")["has_code"] is True
