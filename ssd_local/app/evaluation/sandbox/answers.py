"""Child side: whether an answer matches the expected one, as online judges compare them:
program output line by line or token by token (numbers within 1e-6), and a call's return
value after a JSON round trip.

Runs inside the sandboxed child: standard library only, never imports ``ssd_local``.
"""


def lines_of(text):
    out = [line.rstrip() for line in text.split("\n")]
    while out and not out[-1]:
        out.pop()
    return out


def close_num(x, y):
    return x == y or abs(x - y) <= 1e-6 or abs(x - y) <= 1e-6 * max(abs(x), abs(y))


def same_text(got, exp):
    """Lines with trailing spaces and blank lines ignored; else tokens, numbers within 1e-6."""
    if lines_of(got) == lines_of(exp):
        return True
    a, b = got.split(), exp.split()
    if len(a) != len(b):
        return False
    for x, y in zip(a, b):
        if x != y:
            try:
                if not close_num(float(x), float(y)):
                    return False
            except ValueError:
                return False
    return True


def json_key(k):
    if isinstance(k, str):
        return k
    if isinstance(k, bool) or k is None:
        return {True: "true", False: "false", None: "null"}[k]
    if isinstance(k, (int, float)):
        return repr(k)
    raise TypeError


def plain(o):
    """What a JSON round trip makes of ``o`` (tuples become lists, keys strings, numpy via
    ``tolist``); TypeError when it has no JSON form."""
    if o is None or isinstance(o, (bool, int, float, str)):
        return o
    if isinstance(o, (list, tuple)):
        return [plain(x) for x in o]
    if isinstance(o, dict):
        return {json_key(k): plain(v) for k, v in o.items()}
    if hasattr(o, "tolist"):
        return plain(o.tolist())
    raise TypeError


def same_value(a, b):
    if isinstance(a, bool) or isinstance(b, bool):
        return a == b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return close_num(a, b)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same_value(x, y) for x, y in zip(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same_value(a[k], b[k]) for k in a)
    return a == b


def same_return(got, exp):
    """A call's return value against the test's JSON value; never raises."""
    try:
        norm = plain(got)
    except (TypeError, RecursionError):
        norm = got
    try:
        return norm == exp or same_value(norm, exp)
    except BaseException:
        return False
