"""Child side: the ``call`` kind. ``Solution().<name>`` (or a top-level function) is
called once per test with the test's JSON arguments, under LeetCode's pre-imported names,
and its return value compared with the expected JSON value.

Runs inside the sandboxed child: standard library only, never imports ``ssd_local``.
"""

import os

import _signal as signal  # the plain module imports enum: 3 ms a job

from .answers import same_return
from .judge import classify, compile_sample, flush_std, fresh_main, short, verdict

PRELUDE = dict.fromkeys(("bisect", "collections", "functools", "heapq", "itertools", "math",
                         "operator", "random", "re", "string"))  # modules
PRELUDE.update(dict.fromkeys("Any Callable Deque DefaultDict Dict FrozenSet Generator Iterable "
                             "Iterator List Mapping Optional Sequence Set Tuple Type "
                             "Union".split(), "typing"))
for _mod, _names in (("collections", "Counter OrderedDict defaultdict deque"),
                     ("functools", "cache cmp_to_key lru_cache reduce"),
                     ("heapq", "heapify heappop heappush heappushpop heapreplace nlargest "
                               "nsmallest"),
                     ("bisect", "bisect_left bisect_right insort"),
                     ("itertools", "accumulate chain combinations groupby pairwise "
                                   "permutations product zip_longest"),
                     ("math", "ceil comb floor gcd inf isqrt lcm log2 sqrt")):
    PRELUDE.update(dict.fromkeys(_names.split(), _mod))


def names_in(code):
    """Every global/attribute name the code (and its nested functions/classes) mentions."""
    out, todo = set(), [code]
    while todo:
        co = todo.pop()
        out.update(co.co_names)
        todo.extend(c for c in co.co_consts if hasattr(c, "co_names"))
    return out


def prelude(code, g):
    """LeetCode's environment pre-imports these; import only what the code names (the full
    set costs about 10 ms)."""
    for name in names_in(code) & PRELUDE.keys():
        mod = __import__(PRELUDE[name] or name)
        g[name] = getattr(mod, name) if PRELUDE[name] else mod


def timed(limit, fn, *args):
    """``fn(*args)`` under the per-test timer."""
    signal.setitimer(signal.ITIMER_REAL, limit)
    try:
        return fn(*args)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)


def call_target(spec):
    """Run the solution's definitions; returns (the callable's maker, None) or (None, the
    result dict)."""
    src, name = spec["code"], spec["func_name"]
    code, bad = compile_sample(src)
    if bad:
        return None, verdict(*bad)
    g = fresh_main()
    prelude(code, g)
    try:
        timed(spec["limits"]["test_timeout_s"], exec, code, g)
    except BaseException as exc:
        return None, verdict(*classify(exc, src))
    cls = g.get("Solution")
    if isinstance(cls, type) and hasattr(cls, name):
        return (lambda: getattr(cls(), name)), None
    if callable(g.get(name)):
        return (lambda: g[name]), None
    return None, verdict("error", "NameError",
                         "no Solution.%s and no function %s" % (name, name))


def call_once(spec, target, t, where):
    """None when the test passed, else the result dict."""
    if "bad" in t:
        return verdict("error", "BadTest", where + t["bad"])
    try:
        got = timed(spec["limits"]["test_timeout_s"], lambda: target()(*t["args"]))
    except BaseException as exc:
        status, error, detail = classify(exc, spec["code"])
        return verdict(status, error, where + detail)
    if same_return(got, t["expected"]):
        return None
    try:
        shown = short(repr(got))
    except BaseException:
        shown = "<unprintable>"
    return verdict("failed", "WrongAnswer",
                   where + "expected %s got %s" % (short(t["shown"]), shown))


def run_call(spec, report):
    target, bad = call_target(spec)
    if bad:
        return bad
    for i, t in enumerate(spec["tests"]):
        failed = call_once(spec, target, t, "test %d: " % i)
        if failed is not None:
            return failed
        os.write(report, b"+")
    flush_std()
    return dict(status="passed")
