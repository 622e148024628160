"""The controlled SSD reproduction (tests/test_reproduction.py, design in
tests/reproduction.md) as a figure: pass@10 against temperature for the base and the tuned
model, with 95% intervals and each model's best marked, and the lens's tail mass at lock
positions before and after SSD. Prints the table.

    .venv/bin/python bench/reproduction.py                         # bench/figures/reproduction.png
    .venv/bin/python bench/reproduction.py --seed 1 --out /tmp/r.png --json /tmp/r.json
    .venv/bin/python bench/reproduction.py --control no-truncation # a negative control

Runs exactly what the test runs (same task module, same design v1 settings), plus the lens
at T_train and at the tuned model's best T, which the test does not assert on.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

import repro_task as rt  # noqa: E402

COLOURS = {"base": "#7f7f7f", "tuned": "#1f77b4"}
TICKS = {"base_best": "T={T:g}\n(the base's best)",
         "T=1.0": "T={T:g}\n(forks count as\nlocks here)",
         "T_train": "T={T:g}\n(T_train)", "tuned_best": "T={T:g}\n(the tuned's best)"}


def figure(res: dict, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, bx) = plt.subplots(1, 2, figsize=(11, 4.3), width_ratios=(1.6, 1))
    for label, name in (("base", "base"), ("tuned", "tuned (SSD)")):
        rows = [r for r in res["cells"].values() if r["model"] == label]
        T = [r["T"] for r in rows]
        y = [r["pass@10"] for r in rows]
        lo = [r["pass@10"] - r["ci@10"][0] for r in rows]
        hi = [r["ci@10"][1] - r["pass@10"] for r in rows]
        c = COLOURS[label]
        ax.errorbar(T, y, yerr=[lo, hi], color=c, marker="o", ms=4, capsize=3, label=name)
        ax.plot(T, [r["exact"]["pass@10"] for r in rows], color=c, ls=":", lw=1)
        b = res["cells"][f"{label}@{res['best'][label]}"]
        ax.plot([b["T"]], [b["pass@10"]], marker="*", ms=16, color=c, mec="black", mew=0.7,
                ls="none")
        ax.annotate(f"{name} best\n{b['pass@10']:.3f} at T={b['T']:g}",
                    (b["T"], b["pass@10"]), xytext=(-50, 22) if label == "base" else (-10, 16),
                    textcoords="offset points", ha="center", fontsize=8,
                    arrowprops=dict(arrowstyle="-", color=c, lw=0.7))
    g = res["tuned_best_minus_base_best"]["pass@10"]
    ax.set_title(f"pass@10 over 256 problems (n=20, top-k {rt.TOP_K}, top-p {rt.TOP_P})\n"
                 f"tuned best - base best = {g['value']:+.3f}, paired 95% CI "
                 f"[{g['ci95'][0]:+.3f}, {g['ci95'][1]:+.3f}]", fontsize=9)
    ax.set_xlabel("decoding temperature")
    ax.set_ylabel("pass@10")
    ax.set_ylim(0, 0.85)
    ax.grid(alpha=0.3)
    ax.plot([], [], color="black", ls=":", lw=1, label="exact, from the model's own logits")
    ax.legend(fontsize=8, loc="lower right")

    lens = [(name, res["lens"][name]) for name in TICKS
            if name in res["lens"] and res["lens"][name]["base"] is not None]
    x = range(len(lens))
    for j, side in enumerate(("base", "tuned")):
        vals = [L[side] for _, L in lens]
        bars = bx.bar([i + (j - 0.5) * 0.38 for i in x], vals, 0.38, color=COLOURS[side],
                      label="base" if side == "base" else "tuned (SSD)")
        for rect, v in zip(bars, vals):
            bx.annotate(f"{v:.1e}", (rect.get_x() + rect.get_width() / 2, v), xytext=(0, 2),
                        textcoords="offset points", ha="center", fontsize=7)
    bx.set_yscale("log")
    bx.set_ylim(1e-9, 30)
    bx.set_xticks(list(x), [TICKS.get(name, name).format(T=L["T"]) for name, L in lens],
                  fontsize=8)
    bx.set_ylabel("mean tail mass at lock positions")
    bx.set_title("the lens: what truncation cuts at locks,\nsame decoding for both models",
                 fontsize=9)
    bx.grid(alpha=0.3, axis="y")
    bx.legend(fontsize=8, loc="upper center", ncol=2)
    fig.suptitle("Controlled SSD reproduction (design v1): a hand-wired bigram model with "
                 "fork and lock positions, through the product's pipeline", fontsize=10)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=130)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--control", choices=tuple(rt.CONTROLS), default="none",
                    help="a negative control of the design (section 9): the claims should fail")
    ap.add_argument("--out", type=Path, default=ROOT / "bench/figures/reproduction.png")
    ap.add_argument("--json", type=Path, help="write every number here")
    args = ap.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="ssd-reproduction-"))
    os.environ["SSD_LOCAL_HOME"] = str(work / "ssd-home")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    t0 = time.monotonic()
    try:
        res = rt.reproduce(work, args.seed, log=lambda m: print(m, flush=True),
                           lens_at=rt.LENS_AT + rt.LENS_ALSO, control=args.control)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    wall, cpu = time.monotonic() - t0, os.times()
    print()
    print(rt.table(res))
    gain = res["tuned_best_minus_base_best"][f"pass@{rt.K_MAIN}"]["ci95"][0] > 0
    lower = all(res["lens"][n]["tuned"] < res["lens"][n]["base"] for n in rt.LENS_AT)
    print(f"\nclaims: pass@10 interval above zero: {gain}; lower lock tail mass after SSD: "
          f"{lower}")
    print(f"wall {wall:.1f} s; CPU user {cpu.user:.1f} s, system {cpu.system:.1f} s, sandbox "
          f"children user {cpu.children_user:.1f} s, system {cpu.children_system:.1f} s; "
          f"load average {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    if args.json:
        args.json.write_text(json.dumps(res, indent=1, sort_keys=True))
    if args.control == "none" or args.out != ROOT / "bench/figures/reproduction.png":
        figure(res, args.out)
        print(f"wrote {args.out}")
    return 0 if gain and lower else 1


if __name__ == "__main__":
    sys.exit(main())
