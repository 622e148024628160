"""Training memory, estimated before anything is loaded, and the plan that fits it.

The estimate is arithmetic on the model's shape (``ModelDims``, read from ``config.json``
without touching the weights), the LoRA settings, the micro-batch and the longest examples:

    weights      = params x bytes per weight as loaded (torch: fp32 on CPU, bf16 on CUDA;
                   MLX: as stored, a quantized base at bits/8 + 4/group_size per weight)
    trainable    = trained params x 16 B (fp32 value, gradient, AdamW's two moments; LoRA's
                   adapters are fp32 on every backend); --full: params x 3 x bytes per weight
    activations  = tokens in flight x (per_layer x L, or with checkpointing h x L + one layer
                   recomputed) + one layer of backward workspace, per element at the compute
                   dtype's bytes (``_per_layer`` names each term)
    logits       = positions x vocab x LOGIT_BYTES (8 B measured for torch on CPU, else 20):
                   torch applies the output layer at response positions only, in checkpointed
                   chunks of ``loss_chunk(vocab)`` positions, one chunk alive at a time; MLX
                   applies it at all response positions of the micro-batch at once (Llama,
                   Qwen2/3), other MLX architectures at every position
    runtime      = the framework itself (libraries, allocator), measured once per backend

Tokens in flight are micro-batch x the longest example (padded batches), or the packed
row. ``plan()`` then chooses: today's defaults when they fit, else gradient checkpointing,
then a smaller micro-batch (the effective batch stays, through accumulation), else a one-
line refusal that names the fix. Explicit settings are never changed. The estimate was
checked against measured peaks (tests/test_memory.py, README "Training")."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from ..backends.base import TrainDevice
from ..backends.train_common import loss_chunk
from ..config import AUTO_BATCH, TrainConfig, flag
from ..errors import UserError

GiB = 2**30
# What a trained element costs: fp32 value + gradient + AdamW's two fp32 moments.
TRAINABLE_BYTES = 16
# Logits of one position and vocabulary entry while its loss is differentiated. Torch on
# CPU, measured (tests/test_memory.py, with freed blocks returned: backends/train_common.py):
# 8 B, the fp32 logits and the log-softmax the loss keeps, their gradients taking the freed
# place. Elsewhere, not measured here: 20 B, the logits, the log-softmax and the gradients of
# both alive at once.
LOGIT_BYTES = {"torch-cpu": 8}
LOGIT_BYTES_UNMEASURED = 20
# The framework's own memory (libraries, allocator caches), measured on the peaks of
# tests/test_memory.py (CPU) and taken as a small allowance where not measured (GPU).
RUNTIME_BYTES = {"torch-cpu": 0.42 * GiB, "torch-cuda": 0.25 * GiB,
                 "mlx-cpu": 0.4 * GiB, "mlx-metal": 0.3 * GiB}
# Share of the reported memory a plan may fill: the estimate's margin (tests/test_memory.py)
# plus whatever else the machine does meanwhile.
USABLE = 0.85
# Automatic checkpointing also where it is not needed to fit, but cuts the estimate to this
# share or less (activations dominate): measured on CPU with bench/training.py, it costs
# far less time than the memory it saves (README "Training").
CHECKPOINT_GAIN = 0.5
# Peak resident memory of torch training on CPU over the live memory the estimate counts,
# when glibc keeps freed blocks (measured up to 3.6x, bench/training.py): above this the plan
# turns --compact-memory on (backends/train_common.py, release_freed_blocks).
HEAP_RETENTION = 4.0
# MLX models whose loss applies the output layer at response positions only (mlx_train).
HEAD_AT_RESPONSES = ("llama", "qwen2", "qwen3")
LINEARS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
_DTYPE_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2}


@dataclass(frozen=True)
class ModelDims:
    """A dense decoder's shape, as its config.json gives it."""

    layers: int
    hidden: int
    intermediate: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int
    tied: bool = False
    weight_bytes: float = 2.0  # per weight as stored
    quantized: bool = False  # an MLX quantized (QLoRA) base
    model_type: str = ""

    @property
    def q_dim(self) -> int:
        return self.heads * self.head_dim

    @property
    def kv_dim(self) -> int:
        return self.kv_heads * self.head_dim

    def linears(self) -> dict[str, tuple[int, int]]:
        """(in, out) features of each linear layer of a block."""
        h, i = self.hidden, self.intermediate
        return {"q_proj": (h, self.q_dim), "k_proj": (h, self.kv_dim),
                "v_proj": (h, self.kv_dim), "o_proj": (self.q_dim, h),
                "gate_proj": (h, i), "up_proj": (h, i), "down_proj": (i, h)}

    def params(self) -> int:
        block = sum(a * b for a, b in self.linears().values()) + 2 * self.hidden
        if self.model_type == "qwen2":  # biases on q, k, v
            block += self.q_dim + 2 * self.kv_dim
        if self.model_type == "qwen3":  # RMSNorm on q and k
            block += 2 * self.head_dim
        head = 0 if self.tied else self.vocab * self.hidden
        return self.layers * block + self.vocab * self.hidden + head + self.hidden

    def describe(self) -> str:
        n = self.params()
        size = f"{n / 1e9:.2f}B" if n >= 1e9 else f"{n / 1e6:.1f}M"
        return (f"{size} params, {self.layers} layers, hidden "
                f"{self.hidden}, vocab {self.vocab}")


def dims_from_config(cfg: dict[str, Any]) -> ModelDims:
    """The shape from a transformers (or mlx-community) config.json; a model this estimate
    does not describe raises ``UserError`` saying why."""
    text = cfg.get("text_config") or cfg
    kind = str(text.get("model_type") or cfg.get("model_type") or "")
    if any(text.get(k) for k in ("num_experts", "num_local_experts", "n_routed_experts")):
        raise UserError(f"no memory estimate for mixture-of-experts models ({kind})")
    try:
        h, heads = int(text["hidden_size"]), int(text["num_attention_heads"])
        dims = ModelDims(
            layers=int(text["num_hidden_layers"]), hidden=h,
            intermediate=int(text["intermediate_size"]), heads=heads,
            kv_heads=int(text.get("num_key_value_heads") or heads),
            head_dim=int(text.get("head_dim") or h // heads), vocab=int(text["vocab_size"]),
            tied=bool(text.get("tie_word_embeddings", cfg.get("tie_word_embeddings", False))),
            model_type=kind)
    except (KeyError, TypeError, ValueError) as exc:
        raise UserError(f"no memory estimate: config.json lacks {exc}") from None
    q = cfg.get("quantization") or cfg.get("quantization_config") or {}
    if isinstance(q, dict) and q.get("bits"):
        return replace(dims, quantized=True,
                       weight_bytes=int(q["bits"]) / 8 + 4 / int(q.get("group_size", 64)))
    dtype = str(text.get("dtype") or text.get("torch_dtype") or cfg.get("torch_dtype")
                or "bfloat16")
    return replace(dims, weight_bytes=_DTYPE_BYTES.get(dtype, 2))


def read_dims(folder: Path) -> ModelDims:
    """``folder/config.json`` as ``ModelDims`` (no weights are read)."""
    try:
        cfg = json.loads((Path(folder) / "config.json").read_text())
    except (OSError, ValueError) as exc:
        raise UserError(f"no memory estimate: cannot read {folder}/config.json ({exc})") \
            from None
    return dims_from_config(cfg)


@dataclass(frozen=True)
class Shape:
    """What one forward/backward pass holds: the knobs that move the estimate."""

    batch_size: int
    tokens: int  # per example: the longest (or the packed row, with batch_size 1)
    checkpointing: bool
    full: bool
    lora_rank: int
    lora_targets: str  # all-linear, or names
    dropout: bool  # LoRA dropout on
    responses: int | None = None  # response positions per micro-batch (None: all tokens)

    @property
    def in_flight(self) -> int:
        return self.batch_size * self.tokens


@dataclass(frozen=True)
class Estimate:
    weights: float
    trainable: float
    activations: float
    logits: float
    runtime: float

    @property
    def total(self) -> float:
        return self.weights + self.trainable + self.activations + self.logits + self.runtime

    def describe(self) -> str:
        parts = ", ".join(f"{k} {v / GiB:.2f}" for k, v in asdict(self).items())
        return f"{self.total / GiB:.1f} GiB ({parts})"

    def record(self) -> dict[str, float]:
        return {**{k: round(v / GiB, 3) for k, v in asdict(self).items()},
                "total": round(self.total / GiB, 3)}


def targets_of(dims: ModelDims, targets: str) -> dict[str, tuple[int, int]]:
    names = LINEARS if targets == "all-linear" else \
        tuple(t.strip() for t in targets.split(",") if t.strip())
    return {n: s for n, s in dims.linears().items() if n in names}


def lora_params(dims: ModelDims, rank: int, targets: str) -> int:
    return dims.layers * sum(rank * (a + b) for a, b in targets_of(dims, targets).values())


def _per_layer(dims: ModelDims, s: Shape, framework: str, kind: str, act: float) -> float:
    """Bytes one block keeps per token for its backward pass (measured op by op with
    torch's saved-tensor hooks on Llama blocks; MLX keeps the same arrays)."""
    h, q, kv, i = dims.hidden, dims.q_dim, dims.kv_dim, dims.intermediate
    norm_bytes = 4 if kind == "cuda" else act  # RMSNorm upcasts to fp32 on bf16 models
    elems = 2 * q + 2 * kv + dims.heads + 3 * i  # attention q, k, v, out, logsumexp; MLP
    extra = 2 * h * norm_bytes  # the two RMSNorm inputs
    if s.full:
        return (elems + 3 * h + i) * act + extra + 2 * h * norm_bytes
    t = targets_of(dims, s.lora_targets)
    mask = 1 if kind == "cuda" or framework == "mlx" else act  # a bool mask, or CPU's float
    if s.dropout:  # every adapter keeps its own dropped input, and the mask
        elems += sum(a for a, _ in t.values())
        extra += mask * sum(a for a, _ in t.values())
    else:  # adapters share their input with their neighbours (o_proj's is attention's out)
        groups = {"q_proj": "n1", "k_proj": "n1", "v_proj": "n1", "gate_proj": "n2",
                  "up_proj": "n2", "down_proj": "d"}
        elems += sum(t[n][0] for n in {groups[n]: n for n in t if n in groups}.values())
    return (elems + s.lora_rank * len(t)) * act + extra


def estimate(dims: ModelDims, shape: Shape, device: TrainDevice) -> Estimate:
    """The peak memory of training ``dims`` with ``shape`` on ``device``."""
    act = device.act_bytes or (2.0 if dims.quantized else dims.weight_bytes)
    wb = device.weight_bytes or dims.weight_bytes
    params = dims.params()
    weights = params * wb / device.shards
    trainable = (3 * params * wb / device.shards if shape.full
                 else lora_params(dims, shape.lora_rank, shape.lora_targets) * TRAINABLE_BYTES)
    layer = _per_layer(dims, shape, device.framework, device.kind, act)
    kept = dims.hidden * act * dims.layers + layer if shape.checkpointing \
        else layer * dims.layers
    activations = shape.in_flight * (kept + layer + 3 * dims.hidden * act)
    positions = shape.in_flight if shape.responses is None \
        else min(shape.responses, shape.in_flight)
    if device.framework == "torch":
        positions = min(positions, loss_chunk(dims.vocab))
    elif dims.model_type not in HEAD_AT_RESPONSES:
        positions = shape.in_flight
    where = f"{device.framework}-{device.kind}"
    logits = positions * dims.vocab * LOGIT_BYTES.get(where, LOGIT_BYTES_UNMEASURED)
    runtime = RUNTIME_BYTES.get(where, max(RUNTIME_BYTES.values()))
    return Estimate(weights, trainable, activations, logits, runtime)


# -- the plan -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Workload:
    """The examples a run trains on, as far as memory goes."""

    lengths: tuple[int, ...]  # tokens per example
    responses: tuple[int, ...]  # response tokens per example, in the same order

    def shape(self, cfg: TrainConfig, batch_size: int, checkpointing: bool) -> Shape:
        """The largest micro-batch the batch plan can make: ``batch_size`` of the longest
        examples, padded to the longest (group, none), or one packed row (pack)."""
        top = sorted(self.lengths, reverse=True)
        resp = sorted(self.responses, reverse=True)
        if cfg.batching == "pack":
            row = min(batch_size * cfg.max_seq_len, sum(top[:cfg.effective_batch]))
            rows, tokens, responses = 1, row, sum(resp[:cfg.effective_batch])
        else:
            rows, tokens, responses = batch_size, top[0], sum(resp[:batch_size])
        return Shape(rows, tokens, checkpointing, cfg.full, cfg.lora_rank, cfg.lora_targets,
                     cfg.lora_dropout > 0, responses)


@dataclass(frozen=True)
class MemoryPlan:
    """What training runs with, and why: the one line ``note`` says it."""

    batch_size: int
    gradient_checkpointing: bool
    note: str
    estimate: Estimate | None = None
    available: int = 0
    source: str = ""
    compact_memory: bool | None = None

    def apply(self, cfg: TrainConfig) -> TrainConfig:
        return replace(cfg, batch_size=self.batch_size,
                       gradient_checkpointing=self.gradient_checkpointing,
                       compact_memory=self.compact_memory)

    def record(self) -> dict[str, Any]:
        return {"batch_size": self.batch_size,
                "gradient_checkpointing": self.gradient_checkpointing,
                "compact_memory": self.compact_memory, "note": self.note,
                "estimate_gib": self.estimate.record() if self.estimate else None,
                "available_gib": round(self.available / GiB, 3), "source": self.source}


def _halvings(n: int) -> list[int]:
    out = [n]
    while out[-1] > 1:
        out.append(out[-1] // 2)
    return out


def candidates(cfg: TrainConfig, checkpoint_first: bool = False) -> list[tuple[int, bool]]:
    """(micro-batch, checkpointing) in the order they are tried: the automatic micro-batch
    without checkpointing (unless ``checkpoint_first``), then with it, then halving the
    micro-batch. Explicit settings stay as given."""
    start = cfg.batch_size or min(AUTO_BATCH, cfg.effective_batch)
    sizes = [start] if cfg.batch_size else _halvings(start)
    if cfg.gradient_checkpointing is not None:
        return [(b, cfg.gradient_checkpointing) for b in sizes]
    return ([] if checkpoint_first else [(start, False)]) + [(b, True) for b in sizes]


def _settings(batch_size: int, checkpointing: bool) -> str:
    return (f"micro-batch {batch_size}, gradient checkpointing "
            f"{'on' if checkpointing else 'off'}")


def plan(dims: ModelDims | None, cfg: TrainConfig, device: TrainDevice, work: Workload,
         unknown: str = "") -> MemoryPlan:
    """The first candidate whose estimate fits ``USABLE`` of the device's free memory (or
    of ``--memory-limit-gb``); raises ``UserError`` naming the fix when none does. Without
    dims (``unknown`` says why) or a free-memory figure, today's defaults run unchecked."""
    cands = candidates(cfg)
    limit = cfg.memory_limit_gb
    available = int(limit * GiB) if limit else device.available
    source = "set by --memory-limit-gb" if limit else device.source
    if dims is None or available <= 0:
        b, ck = cands[0]
        why = unknown or f"no estimate ({source or 'free memory'} unknown)"
        return MemoryPlan(b, ck, f"memory: {why}; {_settings(b, ck)}",
                          compact_memory=cfg.compact_memory)  # as given, if given
    usable = available * USABLE
    default = cands[0]
    first = estimate(dims, work.shape(cfg, *default), device)
    gain = ""
    if cfg.gradient_checkpointing is None:  # checkpoint anyway where it halves the peak
        on = estimate(dims, work.shape(cfg, default[0], True), device)
        if on.total <= CHECKPOINT_GAIN * first.total:
            gain = (f"checkpointing brings the estimate from {first.total / GiB:.1f} to "
                    f"{on.total / GiB:.1f} GiB")
            cands = candidates(cfg, checkpoint_first=True)
    for b, ck in cands:
        est = estimate(dims, work.shape(cfg, b, ck), device)
        if est.total > usable:
            continue
        why = []
        if (b, ck) != default:
            if first.total > usable:
                why.append(f"{_settings(*default)} would need {first.total / GiB:.1f} GiB, "
                           f"over {USABLE:.0%} of it")
            elif gain:
                why.append(gain)
            if b != default[0]:
                why.append(f"{-(-cfg.effective_batch // b)} micro-batches per step keep the "
                           f"effective batch {cfg.effective_batch}")
        compact = compact_memory(cfg, device, est, usable)
        note = (f"memory: estimate {est.describe()} of {_of(available, source)}; "
                f"{_settings(b, ck)}" + (f" ({'; '.join(why)})" if why else "")
                + _compact_note(cfg, compact))
        return MemoryPlan(b, ck, note, est, available, source, compact)
    raise UserError(refusal(dims, cfg, device, work, available, source))


def compact_memory(cfg: TrainConfig, device: TrainDevice, est: Estimate,
                   usable: float) -> bool:
    """``--compact-memory`` as given, else on for torch on CPU where the heap's retention
    of freed blocks could push the peak past what fits."""
    if cfg.compact_memory is not None:
        return cfg.compact_memory
    return (device.framework, device.kind) == ("torch", "cpu") and \
        est.total * HEAP_RETENTION > usable


def _compact_note(cfg: TrainConfig, compact: bool) -> str:
    if not compact:
        return ""
    why = "" if cfg.compact_memory else f" ({HEAP_RETENTION:g}x the estimate would not fit)"
    return "; freed memory returned at once" + why


def _of(available: int, source: str) -> str:
    return f"{available / GiB:.1f} GiB {source}"


def longest_fitting(dims: ModelDims, shape: Shape, device: TrainDevice, usable: float) -> int:
    """The most tokens per example that fit ``usable`` at ``shape``'s other settings (0:
    none)."""
    lo, hi = 0, shape.tokens
    while lo < hi:
        mid = (lo + hi + 1) // 2
        resp = None if shape.responses is None else min(shape.responses, mid * shape.batch_size)
        fits = estimate(dims, replace(shape, tokens=mid, responses=resp), device).total <= usable
        lo, hi = (mid, hi) if fits else (lo, mid - 1)
    return lo


def refusal(dims: ModelDims, cfg: TrainConfig, device: TrainDevice, work: Workload,
            available: int, source: str) -> str:
    """One line: what the smallest allowed setting needs, against what there is, and the
    fix."""
    usable = available * USABLE
    b, ck = candidates(cfg)[-1]
    shape = work.shape(cfg, b, ck)
    est = estimate(dims, shape, device)
    head = (f"training needs about {est.total / GiB:.1f} GiB even at {_settings(b, ck)}, "
            f"more than {USABLE:.0%} of {_of(available, source)}")
    free = replace(cfg, batch_size=None, gradient_checkpointing=None)
    if cfg.batch_size is not None or cfg.gradient_checkpointing is not None:
        for fb, fck in candidates(free):
            if estimate(dims, work.shape(free, fb, fck), device).total <= usable:
                return (f"{head}; use --batch-size {fb}"
                        + (" --gradient-checkpointing" if fck else "")
                        + " (or leave both out: ssd-local then chooses)")
    fixed = est.weights + est.trainable + est.runtime
    if fixed <= usable:
        n = longest_fitting(dims, shape, device, usable)
        if n >= 64:
            return (f"{head}; use --max-seq-len {n // 64 * 64} (the longest example has "
                    f"{shape.tokens} tokens), or --memory-limit-gb if more is free")
    return f"{head}; {_smaller_model_fix(dims, cfg, device, est, usable)}"


def _smaller_model_fix(dims: ModelDims, cfg: TrainConfig, device: TrainDevice,
                       est: Estimate, usable: float) -> str:
    weights = (f"the weights alone take {est.weights / GiB:.1f} GiB (and the framework "
               f"{est.runtime / GiB:.1f})")
    if cfg.full:
        return f"{weights} and --full trains all of them: drop --full to train LoRA"
    if est.trainable > usable / 4:
        return (f"the adapters and their AdamW state take {est.trainable / GiB:.1f} GiB: "
                f"lower {flag('lora_rank')} (now {cfg.lora_rank})")
    if device.framework == "mlx":
        return (f"{weights}: train a smaller quant of the model for QLoRA (e.g. a 4-bit "
                "mlx-community build)" if not dims.quantized else
                f"{weights}: train a smaller quant (fewer bits) of the model")
    return (f"{weights}: train a smaller model (or on Apple silicon, QLoRA with --backend "
            "mlx on a 4-bit build)")
