"""The lens's arithmetic, pure numpy: a decoding's truncation set on logit rows, the
per-position measurements, the lock/fork labels and the base-vs-tuned summary. The
definitions and the rule are in the package's docstring (``ssd_local.app.lens``)."""


from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from ...config import Decoding, LensConfig
from ...errors import UserError

NEITHER, LOCK, FORK = 0, 1, 2
LABELS = {NEITHER: "neither", LOCK: "lock", FORK: "fork"}
BLOCK = 32  # logit rows per numpy pass (a 49k-token vocabulary: 12 MB per float64 array)
RESAMPLES = 1000  # bootstrap over texts
BOOTSTRAP_SEED = 0


@dataclass
class Stats:
    """Per-position measurements, one entry per scored token."""

    kept: np.ndarray
    entropy: np.ndarray  # of the tempered, truncated (head) distribution, nats
    full_entropy: np.ndarray
    tail_entropy: np.ndarray
    survivors: np.ndarray
    top: np.ndarray  # the top token's tempered probability
    second: np.ndarray  # the second-largest tempered probability inside S (0: |S| = 1)
    logprob: np.ndarray  # of the scored token, at T = 1
    in_set: np.ndarray  # whether the scored token lies inside S

    COLUMNS = ("kept", "entropy", "full_entropy", "tail_entropy", "survivors", "top",
               "second", "logprob", "in_set")

    @property
    def tail(self) -> np.ndarray:
        return 1.0 - self.kept

    def __len__(self) -> int:
        return len(self.kept)

    @classmethod
    def concat(cls, parts: Sequence["Stats"]) -> "Stats":
        if not parts:
            return cls(*(np.zeros(0) for _ in cls.COLUMNS))
        return cls(*(np.concatenate([getattr(p, c) for p in parts]) for c in cls.COLUMNS))


def _xlogx(p: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0)), 0.0)


def truncate(logits: np.ndarray, d: Decoding) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(p_T, candidate token ids by descending p_T, how many of them survive) for logit
    rows (n, V): the paper's order, temperature -> top-k -> top-p."""
    if d.temperature <= 0:
        raise UserError("the lens needs a sampling temperature above 0")
    z = np.asarray(logits, dtype=np.float64) / d.temperature
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    p = e / e.sum(axis=1, keepdims=True)
    n, v = p.shape
    k = d.top_k if 0 < d.top_k < v else v
    if k < v:
        cand = np.argpartition(-z, k - 1, axis=1)[:, :k]
    else:
        cand = np.broadcast_to(np.arange(v), (n, v))
    order = np.argsort(-np.take_along_axis(z, cand, axis=1), axis=1, kind="stable")
    cand = np.take_along_axis(cand, order, axis=1)
    if d.top_p >= 1.0:
        return p, cand, np.full(n, k)
    pc = np.take_along_axis(p, cand, axis=1)
    cum = np.cumsum(pc / pc.sum(axis=1, keepdims=True), axis=1)
    reached = cum >= d.top_p
    n_keep = np.where(reached.any(axis=1), reached.argmax(axis=1) + 1, k)
    return p, cand, n_keep


def position_stats(logits: np.ndarray, d: Decoding, targets: Sequence[int]) -> Stats:
    """The lens's measurements for logit rows (n, V) whose next tokens are ``targets``."""
    parts = []
    targets = np.asarray(targets, dtype=np.int64)
    for s in range(0, len(logits), BLOCK):
        parts.append(_block(np.asarray(logits[s:s + BLOCK]), d, targets[s:s + BLOCK]))
    return Stats.concat(parts)


def _block(logits: np.ndarray, d: Decoding, targets: np.ndarray) -> Stats:
    p, cand, n_keep = truncate(logits, d)
    pc = np.take_along_axis(p, cand, axis=1)
    mask = np.arange(cand.shape[1])[None, :] < n_keep[:, None]
    head = np.where(mask, pc, 0.0)
    kept = np.minimum(head.sum(axis=1), 1.0)
    full = -_xlogx(p).sum(axis=1)
    head_part = -_xlogx(head).sum(axis=1)  # -sum over S of p log p
    entropy = head_part / kept + np.log(kept)
    tail = 1.0 - kept
    with np.errstate(divide="ignore", invalid="ignore"):
        tail_entropy = np.where(tail > 1e-12, (full - head_part) / tail + np.log(
            np.where(tail > 1e-12, tail, 1.0)), 0.0)
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=1, keepdims=True)
    logprob = np.take_along_axis(z, targets[:, None], axis=1)[:, 0] - np.log(
        np.exp(z).sum(axis=1))
    in_set = ((cand == targets[:, None]) & mask).any(axis=1)
    second = np.where(n_keep >= 2, pc[:, 1] if pc.shape[1] > 1 else 0.0, 0.0)
    return Stats(kept, np.maximum(entropy, 0.0), full, np.maximum(tail_entropy, 0.0),
                 n_keep.astype(np.int64), pc[:, 0], second, logprob, in_set)


def h2(q: np.ndarray) -> np.ndarray:
    """Binary entropy (nats)."""
    q = np.asarray(q, dtype=np.float64)
    return -_xlogx(q) - _xlogx(1.0 - q)


def rule_text(cfg: LensConfig) -> str:
    """The lock/fork rule in words, with its thresholds."""
    return (f"on the base model's tempered distribution p_T = softmax(logits / T): lock = "
            f"the top token has p_T >= {cfg.lock_threshold:g}; fork = not a lock, and at "
            f"least two tokens inside the truncation set have p_T >= "
            f"{cfg.fork_threshold:g} each; neither = the rest")


def label(base: Stats, cfg: LensConfig) -> np.ndarray:
    """The rule above, on the base model's measurements: LOCK, FORK or NEITHER each."""
    lock = base.top >= cfg.lock_threshold
    fork = ~lock & (base.second >= cfg.fork_threshold)
    return np.where(lock, LOCK, np.where(fork, FORK, NEITHER)).astype(np.int8)


# -- the summary ------------------------------------------------------------------------------
def _mean(x: np.ndarray, where: np.ndarray | None = None) -> float | None:
    x = np.asarray(x, dtype=np.float64)
    x = x if where is None else x[where]
    return float(x.mean()) if len(x) else None


def counts(labels: np.ndarray) -> dict[str, int]:
    return {name: int((labels == code).sum()) for code, name in
            ((LOCK, "lock"), (FORK, "fork"), (NEITHER, "neither"))}


# (summary key, Stats column, at which positions)
MEASURES = (("tail_mass_at_lock", "tail", LOCK), ("head_entropy_at_fork", "entropy", FORK),
            ("kept_mass", "kept", None), ("survivors_at_fork", "survivors", FORK),
            ("top_prob_at_lock", "top", LOCK), ("head_entropy", "entropy", None),
            ("survivors", "survivors", None), ("entropy", "full_entropy", None))


def _column(s: Stats, name: str) -> np.ndarray:
    return np.asarray(getattr(s, name), dtype=np.float64)


def model_summary(s: Stats, labels: np.ndarray, cfg: LensConfig) -> dict[str, Any]:
    """One model's means over the positions (``labels``: the base model's)."""
    out: dict[str, Any] = {
        key: _mean(_column(s, col), None if at is None else labels == at)
        for key, col, at in MEASURES}
    out["tail_mass"] = _mean(s.tail)
    out["in_set"] = _mean(s.in_set)  # share of the texts' tokens inside the set
    out["nll"] = None if not len(s) else -float(np.mean(s.logprob))
    out["own_labels"] = counts(label(s, cfg))  # the rule on this model's own distribution
    return out


def paired(base: list[Stats], tuned: list[Stats], labels: list[np.ndarray], col: str,
           at: int | None, rng: np.random.Generator) -> dict[str, Any]:
    """tuned - base of a column's mean at the positions labelled ``at`` (None: all),
    pooled over texts, with a 95% interval from a bootstrap over texts."""
    masks = [np.ones(len(lab), bool) if at is None else lab == at for lab in labels]
    sb = np.array([_column(b, col)[m].sum() for b, m in zip(base, masks)])
    st = np.array([_column(t, col)[m].sum() for t, m in zip(tuned, masks)])
    c = np.array([m.sum() for m in masks], dtype=np.float64)
    if c.sum() == 0:
        return {"value": None, "ci95": None, "positions": 0}
    value = float((st.sum() - sb.sum()) / c.sum())
    ci = None
    if len(c) >= 2:
        idx = rng.integers(0, len(c), size=(RESAMPLES, len(c)))
        den = c[idx].sum(axis=1)
        ok = den > 0
        d = (st[idx].sum(axis=1) - sb[idx].sum(axis=1))[ok] / den[ok]
        ci = [float(x) for x in np.percentile(d, [2.5, 97.5])]
    return {"value": value, "ci95": ci, "positions": int(c.sum())}


def summarise(base: list[Stats], tuned: list[Stats], labels: list[np.ndarray],
              cfg: LensConfig) -> dict[str, Any]:
    """The comparison: position counts by label, each model's means, and the differences
    (tuned - base) with bootstrap intervals over texts."""
    b, t = Stats.concat(base), Stats.concat(tuned)
    lab = np.concatenate(labels) if labels else np.zeros(0, np.int8)
    rng = np.random.default_rng(BOOTSTRAP_SEED)
    diff = {key: paired(base, tuned, labels, col, at, rng)
            for key, col, at in MEASURES[:4]}
    return {"texts": len(base), "positions": len(b), "labels": counts(lab),
            "base": model_summary(b, lab, cfg), "tuned": model_summary(t, lab, cfg),
            "difference": diff}
