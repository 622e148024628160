"""One frozen dataclass per stage, each default written once, with its help in the field's
metadata. The CLI's options and the TUI's form fields are generated from these fields."""

from __future__ import annotations

from dataclasses import dataclass, replace

from ..errors import UserError
from .parts import (QUANT_TYPES, TRAIN_BACKENDS, DecodingOptions, Generation, SandboxOptions,
                    flag, opt, require_choice, require_positive)
from .presets import PRESETS, SYSTEM_PROMPT, Decoding, detect_preset, preset


@dataclass(frozen=True)
class SampleConfig(Generation):
    prompts: str = opt("builtin", "prompt source: builtin, rstar (the paper's rStar-Coder "
                       "seed_sft), rstar:DIR (a local copy), or a .jsonl/.txt file",
                       metavar="SRC")
    limit: int | None = opt(None, "use only the first N prompts", metavar="N")
    preset: str | None = opt(None, "decoding preset from the paper (default: chosen from the "
                             "model name)", choices=tuple(PRESETS))
    samples_per_prompt: int = opt(1, "answers sampled per prompt (the paper: 1)", metavar="N")
    max_new_tokens: int = opt(4096, "generation cap per answer; answers cut here are kept "
                              "and counted (finish_reason=length)", metavar="N")
    system_prompt: str | None = opt(None, "system message for instruct models (default: "
                                    "answer in Python in a markdown code block)", cli=False)

    # Fields that may change between invocations of the same run (they do not change
    # what a sample is): a larger --limit extends the run, batch size is only speed, and
    # the same model may be served from another address.
    RESUMABLE_CHANGES = ("limit", "batch_size", "backend", "endpoint", "api_key",
                         "concurrency")
    HELP = {
        "temperature": "T_train, applied first; higher explores more at fork positions "
                       "(default: the preset's)",
        "top_k": "keep the K most likely tokens after temperature; 0 = off (default: the "
                 "preset's)",
        "top_p": "then keep the smallest set with mass P; cuts the distractor tail; 1.0 = off "
                 "(default: the preset's)",
        "batch_size": "sequences decoded together (llama.cpp slots / torch batch)",
        "endpoint": "sample through an OpenAI-compatible server (vLLM, llama-server, "
                    "ssd-local serve) at URL, e.g. http://HOST:8000/v1; MODEL names the "
                    "model it serves",
        "chat": "with --endpoint: send chat messages and let the server apply its template "
                "(default: our template, sent as a plain completion)",
    }

    def validate(self) -> None:
        require_choice(self.preset, tuple(PRESETS), "preset")
        self.validate_generation()
        require_positive(self, "samples_per_prompt", "max_new_tokens")
        if self.limit is not None and self.limit < 1:
            raise UserError("--limit must be at least 1")
        if self.chat and not self.endpoint:
            raise UserError("--chat applies to --endpoint sampling; add --endpoint URL")

    def resolve(self, model_name: str) -> "SampleConfig":
        """Fill the preset-driven fields from the preset (explicit values win)."""
        self.validate()
        p = PRESETS[self.preset or detect_preset(model_name)]
        d = self.over(p.train)
        return replace(
            self, preset=p.name, temperature=d.temperature, top_k=d.top_k, top_p=d.top_p,
            system_prompt=(None if p.thinking else SYSTEM_PROMPT)
            if self.system_prompt is None else self.system_prompt)

    @property
    def decoding(self) -> Decoding:
        if self.temperature is None or self.top_k is None or self.top_p is None:
            raise ValueError("resolve() the config before reading its decoding")
        return Decoding(self.temperature, self.top_k, self.top_p)


# Learning rates. Full fine-tuning: the paper's cosine 5e-6 -> 1e-6. LoRA needs a much
# higher rate (its update starts at zero and is low-rank); see README "Training" for the
# measurement behind the default.
LR_FULL = 5e-6
LR_LORA = 2e-4
MIN_LR_RATIO = 0.2  # the paper decays 5e-6 -> 1e-6
# The micro-batch training starts from when --batch-size is left to the memory plan
# (app/memory.py): kept when the estimate fits, else halved after gradient checkpointing.
AUTO_BATCH = 4


@dataclass(frozen=True)
class TrainConfig:
    full: bool = opt(False, "full fine-tune instead of LoRA (needs far more memory)")
    lora_rank: int = opt(16, "LoRA rank r", metavar="R")
    lora_alpha: int = opt(32, "LoRA alpha (scale = alpha / r)", metavar="A")
    lora_dropout: float = opt(0.05, "dropout on the LoRA input", metavar="P")
    lora_targets: str = opt("all-linear", "modules that get adapters: all-linear, or a "
                            "comma-separated list of names such as q_proj,v_proj",
                            metavar="NAMES")
    lr: float | None = opt(None, f"peak learning rate (default: {LR_LORA:g} for LoRA, "
                           f"{LR_FULL:g} full, as in the paper)", metavar="LR")
    warmup_ratio: float = opt(0.1, "share of steps spent warming up (paper: 250 of 2,500)",
                              metavar="F")
    weight_decay: float = opt(0.1, "AdamW weight decay (paper: 0.1)", metavar="W")
    epochs: float = opt(1.0, "passes over the samples (ignored with --max-steps)", metavar="E")
    max_steps: int | None = opt(None, "stop after this many optimizer steps", metavar="N")
    batch_size: int | None = opt(None, f"examples per forward pass (per process); default "
                                 f"auto: {AUTO_BATCH} when the memory estimate fits, else "
                                 "gradient checkpointing first, then halved until it fits",
                                 metavar="N")
    effective_batch: int = opt(32, "examples per optimizer step, reached by gradient "
                               "accumulation (paper: 32)", metavar="N")
    max_seq_len: int = opt(4096, "longer examples are cut (paper: 65,536)", metavar="N")
    batching: str = opt("group", "group: batch examples of similar length (fastest measured "
                        "on CPU); pack: concatenate examples, attention kept inside each (pays "
                        "off with flash attention on GPU); none: padded in sample order",
                        choices=("group", "pack", "none"))
    gradient_checkpointing: bool | None = opt(
        None, "recompute activations to save memory; default auto: on when the memory "
              "estimate does not fit without it or it at least halves the estimate, else off "
              "(--no-gradient-checkpointing: never)")
    compact_memory: bool | None = opt(
        None, "torch on CPU (Linux): give memory freed during a step back to the system at "
              "once, so the peak stays near the estimate instead of up to 4x it, at about "
              "1.3x the step time; default auto: on when 4x the estimate would not fit")
    memory_limit_gb: float | None = opt(
        None, "memory training may use, in GiB, instead of what the backend reports (free "
              "CUDA memory, MLX's recommended working set, or available RAM); the automatic "
              "settings fit this, and training that cannot is refused", metavar="GB")
    save_every: int = opt(50, "checkpoint every N optimizer steps", metavar="N")
    keep_checkpoints: int = opt(2, "how many recent checkpoints to keep", metavar="N")
    val_fraction: float = opt(0.05, "share of prompts held out for validation loss",
                              metavar="F")
    eval_every: int = opt(50, "validation loss every N steps (and at the end)", metavar="N")
    drop_looped: bool = opt(False, "also drop samples that end in a repetition loop (the "
                            "paper keeps them)")
    seed: int = opt(0, "seed for data order, dropout and the adapter's initialisation")
    fsdp: bool = opt(False, "shard the model across processes under torchrun (FSDP)")
    backend: str | None = opt(None, "trainer: mlx (mlx-lm) or torch (transformers + peft); "
                              "default: mlx on Apple silicon, else torch (CUDA or CPU); a "
                              "run resumes with the backend that started it",
                              choices=TRAIN_BACKENDS)
    t_eval: float | None = opt(None, "T_eval written to the tuned model's generation_config "
                               "(default: the preset's)", metavar="T")
    eval_top_k: int | None = opt(None, "top-k for T_eval decoding (default: the preset's)",
                                 metavar="K")
    eval_top_p: float | None = opt(None, "top-p for T_eval decoding (default: the preset's)",
                                   metavar="P")

    RESUMABLE_CHANGES = ("max_steps", "epochs", "save_every", "keep_checkpoints",
                         "eval_every", "t_eval", "eval_top_k", "eval_top_p",
                         "gradient_checkpointing", "batch_size", "memory_limit_gb",
                         "compact_memory")

    @property
    def peak_lr(self) -> float:
        return self.lr if self.lr is not None else (LR_FULL if self.full else LR_LORA)

    def validate(self) -> None:
        require_positive(self, "lora_rank", "lora_alpha", "effective_batch",
                         "max_seq_len", "save_every", "keep_checkpoints", "eval_every")
        if self.batch_size is not None and self.batch_size < 1:
            raise UserError("--batch-size must be at least 1")
        if self.memory_limit_gb is not None and self.memory_limit_gb <= 0:
            raise UserError("--memory-limit-gb must be positive")
        if self.max_steps is not None and self.max_steps < 1:
            raise UserError("--max-steps must be at least 1")
        if self.epochs <= 0:
            raise UserError("--epochs must be positive")
        if self.lr is not None and not 0 < self.lr < 1:
            raise UserError(f"--lr {self.lr} is out of range; LoRA commonly uses 1e-4 to 2e-4, "
                            "full fine-tuning 5e-6")
        if not 0 <= self.warmup_ratio < 1:
            raise UserError("--warmup-ratio must be in [0, 1)")
        if not 0 <= self.val_fraction < 0.5:
            raise UserError("--val-fraction must be in [0, 0.5)")
        if not 0 <= self.lora_dropout < 1:
            raise UserError("--lora-dropout must be in [0, 1)")
        if self.backend is not None and self.backend not in TRAIN_BACKENDS:
            raise UserError(f"unknown --backend '{self.backend}' for training; choose one of: "
                            + ", ".join(TRAIN_BACKENDS))
        if self.batch_size is not None and self.effective_batch < self.batch_size:
            raise UserError(f"--effective-batch {self.effective_batch} is smaller than "
                            f"--batch-size {self.batch_size}; raise it or lower --batch-size")

    def eval_decoding(self, preset_name: str | None) -> Decoding:
        """T_eval for the tuned model: the preset's, with --t-eval & co. in place."""
        return preset(preset_name).eval.overridden(self.t_eval, self.eval_top_k,
                                                   self.eval_top_p)


@dataclass(frozen=True)
class ExportConfig:
    quant: str = opt("q4_k_m,q8_0", "GGUF types to produce, comma-separated: "
                     + ", ".join(QUANT_TYPES), metavar="TYPES")

    def quants(self) -> list[str]:
        qs = [q.strip().lower() for q in self.quant.split(",") if q.strip()]
        bad = [q for q in qs if q not in QUANT_TYPES]
        if bad or not qs:
            raise UserError(f"unknown quant type {', '.join(bad) or '(none)'}; choose from "
                            + ", ".join(QUANT_TYPES))
        return list(dict.fromkeys(qs))

    def validate(self) -> None:
        self.quants()


@dataclass(frozen=True)
class ServeConfig:
    host: str = opt("127.0.0.1", "address to bind; anything but loopback needs --api-key")
    port: int = opt(8080, "TCP port", metavar="P")
    api_key: str | None = opt(None, "require this key (Authorization: Bearer KEY)",
                              metavar="KEY")
    quant: str | None = opt(None, "which of the run's GGUFs to serve (default: the smallest)",
                            metavar="TYPE")
    n_ctx: int = opt(8192, "context window of each slot (each request), in tokens",
                     metavar="N")
    slots: int | None = opt(None, "requests decoded at once (continuous batching), each with "
                            "its own --n-ctx window and prompt cache; more wait for a free "
                            "slot (default: auto from the cores, the free memory and the "
                            "model's size)", metavar="N")
    gpu_layers: int | None = opt(None, "layers offloaded to the GPU; 0 = CPU only, -1 = all "
                                 "that fit (default: -1 when the llama.cpp build can offload, "
                                 "else 0)", metavar="N")
    threads: int | None = opt(None, "CPU threads (default: all cores)", metavar="N")

    @property
    def base_url(self) -> str:
        """What clients on this machine point at."""
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::") else self.host
        return f"http://{host}:{self.port}/v1"

    def validate(self) -> None:
        require_positive(self, "port", "n_ctx")
        if self.slots is not None and self.slots < 1:
            raise UserError("--slots must be at least 1")
        if self.gpu_layers is not None and self.gpu_layers < -1:
            raise UserError("--gpu-layers must be -1 (all that fit), 0 (CPU) or a count")


@dataclass(frozen=True)
class EvalConfig(Generation, SandboxOptions):
    benchmark: str = opt("humaneval", "humaneval, humaneval-plus, mbpp-plus or livecodebench "
                                      "(NAME:DIR reads a local copy of a hub dataset)",
                         metavar="NAME")
    release: str = opt("v6", "livecodebench release (v1..v6)", metavar="V")
    start_date: str | None = opt(None, "livecodebench: only problems from this date "
                                 "(YYYY-MM-DD)", metavar="DATE")
    end_date: str | None = opt(None, "livecodebench: only problems up to this date",
                               metavar="DATE")
    limit: int | None = opt(None, "use only the first N problems", metavar="N")
    n: int | None = opt(None, "samples per problem (default: the largest k)", metavar="N")
    k: str = opt("1", "pass@k to report, comma-separated, e.g. 1,5", metavar="K")
    max_new_tokens: int = opt(1024, "generation cap per answer", metavar="N")
    quant: str | None = opt(None, "which of a run's GGUFs to evaluate (default: the most "
                            "precise)", metavar="TYPE")
    allow_overlap: bool = opt(False, "evaluate even when the run trained on benchmark "
                              "problems")
    HELP = {
        "temperature": "decoding temperature (default: a run's T_eval; a model's own "
                       "recommended setting)",
        "top_k": "top-k, 0 = off (default: as for --temperature)",
        "top_p": "top-p, 1.0 = off (default: as for --temperature)",
        "batch_size": "sequences decoded together",
        "chat": "with --endpoint: send chat messages and let the server apply its template "
                "(the default with no model named)",
    }

    def ks(self) -> list[int]:
        try:
            ks = sorted({int(p) for p in self.k.split(",") if p.strip()})
        except ValueError:
            raise UserError(f"--k {self.k!r} is not a list of numbers; use e.g. --k 1,5") \
                from None
        if not ks or ks[0] < 1:
            raise UserError("--k needs positive numbers, e.g. --k 1,5")
        return ks

    def samples(self) -> int:
        n = self.n if self.n is not None else max(self.ks())
        if n < max(self.ks()):
            raise UserError(f"pass@{max(self.ks())} needs --n {max(self.ks())} or more "
                            f"samples per problem (got --n {n})")
        return n

    def validate(self) -> None:
        self.samples()
        self.validate_generation()
        self.validate_sandbox()
        require_positive(self, "max_new_tokens")
        if self.limit is not None and self.limit < 1:
            raise UserError("--limit must be at least 1")


DEFAULT_SWEEP = "0.2,0.4,0.6,0.8,1.0,1.2,1.4"


@dataclass(frozen=True)
class CompareConfig(EvalConfig):
    temperatures: str = opt(DEFAULT_SWEEP, "the temperature sweep, comma-separated",
                            metavar="LIST")
    base_grid: bool = opt(False, "also decode the base model at every temperature over a "
                          "top-k x top-p grid (--base-grid-top-k x --base-grid-top-p), so the "
                          "verdict is against the best-tuned base, as the paper argues; off: "
                          "the base keeps its own top-k/top-p")
    base_grid_top_k: str = opt("0,20", "--base-grid's top-k values, comma-separated (0 = off)",
                               metavar="LIST")
    base_grid_top_p: str = opt("0.8,0.95,1", "--base-grid's top-p values, comma-separated "
                               "(1 = off)", metavar="LIST")
    adopt: bool = opt(True, "write the tuned model's measured best decoding to the run: "
                      "serve, eval, export and the run's GGUFs use it from then on "
                      "(--no-adopt: only report)")

    def grid_top_k(self) -> list[int]:
        return _numbers(self.base_grid_top_k, int, "base_grid_top_k", 0, 10**6)

    def grid_top_p(self) -> list[float]:
        return _numbers(self.base_grid_top_p, float, "base_grid_top_p", 0.0, 1.0)

    def sweep(self) -> list[float]:
        try:
            ts = sorted({round(float(x), 4) for x in self.temperatures.split(",")
                         if x.strip()})
        except ValueError:
            raise UserError(f"--temperatures {self.temperatures!r} is not a list of numbers; "
                            f"use e.g. {DEFAULT_SWEEP}") from None
        if not ts or ts[0] < 0 or ts[-1] > 10:
            raise UserError("--temperatures needs values in 0..10, e.g. " + DEFAULT_SWEEP)
        return ts

    def validate(self) -> None:
        super().validate()
        self.sweep()
        self.grid_top_k()
        self.grid_top_p()


def _numbers(text: str, kind: type, name: str, low: float, high: float) -> list:
    """A comma-separated list of ``kind`` values in [low, high], sorted, without repeats."""
    try:
        values = sorted({kind(x) for x in text.split(",") if x.strip()})
    except ValueError:
        raise UserError(f"{flag(name)} {text!r} is not a list of numbers") from None
    if not values or values[0] < low or values[-1] > high or (kind is float and values[0] <= 0):
        raise UserError(f"{flag(name)} needs values in {low:g}..{high:g}"
                        + (" (above 0)" if kind is float else ""))
    return values


@dataclass(frozen=True)
class LensConfig(DecodingOptions):
    """``ssd-local lens RUN``: kept and tail mass, head entropy and survivors per token,
    under the base and the tuned model, at lock and fork positions (the rule is in
    ``app/lens/``)."""

    source: str = opt("samples", "texts to score: samples (the run's own, i.e. its training "
                      "data), eval:FOLDER (the answers in RUN/evals/FOLDER), or a .jsonl "
                      "file of prompt (or prompt_text) and completion pairs", metavar="SRC")
    limit: int = opt(16, "score the first N texts (0: all)", metavar="N")
    max_tokens: int = opt(1024, "score at most N tokens of each completion (the rest is "
                          "cut, and counted)", metavar="N")
    lock_threshold: float = opt(0.9, "lock: the base model's top token has at least this "
                                "tempered probability", metavar="P")
    fork_threshold: float = opt(0.1, "fork: not a lock, and at least two tokens inside the "
                                "base model's truncation set each have at least this "
                                "tempered probability", metavar="P")
    chunk: int = opt(256, "tokens per forward pass (llama.cpp's n_batch); progress is "
                     "reported per chunk", metavar="N")
    base: str | None = opt(None, "the base model (default: the model the run started from)",
                           metavar="MODEL")
    tuned: str | None = opt(None, "the tuned model (default: the run's merged folder, else "
                            "its most precise GGUF)", metavar="MODEL")
    HELP = {
        "temperature": "T of the measured decoding, applied first (default: the run's "
                       "T_train, from its recorded sample config)",
        "top_k": "then top-k; 0 = off (default: the run's, as for --temperature)",
        "top_p": "then top-p; 1.0 = off (default: the run's, as for --temperature)",
    }

    def validate(self) -> None:
        self.validate_decoding()
        if self.temperature is not None and self.temperature <= 0:
            raise UserError("--temperature 0 is greedy decoding, which truncates nothing "
                            "worth measuring; give the sampling temperature (e.g. T_train)")
        require_positive(self, "max_tokens", "chunk")
        if self.limit < 0:
            raise UserError("--limit must be 0 (all texts) or more")
        for name in ("lock_threshold", "fork_threshold"):
            if not 0 < getattr(self, name) < 1:
                raise UserError(f"{flag(name)} must be a probability in (0, 1)")
        if self.lock_threshold + self.fork_threshold > 1:
            raise UserError("--lock-threshold plus --fork-threshold must not exceed 1 (a "
                            "lock leaves at most 1 - lock to every other token)")
