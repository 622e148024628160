"""Every default lives here, once: one frozen dataclass per stage, with help text in the
field metadata. The CLI options (and the TUI form) are generated from these fields.

Decoding presets come from the paper's tables (see docs in README: "Presets")."""

from __future__ import annotations

import re
from dataclasses import MISSING, asdict, dataclass, field, fields, replace
from typing import Any

from .errors import UserError


def opt(default: Any, help: str, *, choices: tuple[str, ...] | None = None,
        metavar: str | None = None, cli: bool = True) -> Any:
    """A config field: default value plus the metadata the CLI/TUI are built from."""
    return field(default=default, metadata={"help": help, "choices": choices,
                                            "metavar": metavar, "cli": cli})


@dataclass(frozen=True)
class Decoding:
    """Temperature, then top-k, then top-p (the paper's order). top_k=0 and top_p=1.0
    switch truncation off."""

    temperature: float
    top_k: int
    top_p: float

    def describe(self) -> str:
        k = self.top_k if self.top_k else "off"
        p = self.top_p if self.top_p < 1.0 else "off"
        return f"T={self.temperature:g} top-k={k} top-p={p}"


@dataclass(frozen=True)
class Preset:
    name: str
    description: str
    train: Decoding  # T_train: how SSD samples its training data
    eval: Decoding  # T_eval: how the tuned model is decoded
    base: Decoding  # the base model's best decoding in the paper
    thinking: bool = False  # thinking models keep their native template, no system message


PRESETS: dict[str, Preset] = {p.name: p for p in [
    Preset("qwen3-instruct", "paper: Qwen3-4B-Instruct-2507",
           Decoding(1.6, 20, 0.8), Decoding(1.1, 20, 0.8), Decoding(0.7, 20, 0.8)),
    Preset("qwen3-30b-instruct", "paper: Qwen3-30B-A3B-Instruct-2507",
           Decoding(1.6, 20, 0.8), Decoding(0.9, 20, 0.8), Decoding(0.7, 20, 0.8)),
    Preset("qwen3-thinking", "paper: Qwen3-4B-Thinking-2507",
           Decoding(1.1, 20, 0.95), Decoding(0.7, 20, 0.95), Decoding(0.6, 20, 0.95), True),
    Preset("qwen3-30b-thinking", "paper: Qwen3-30B-A3B-Thinking-2507",
           Decoding(1.2, 20, 0.95), Decoding(0.7, 20, 0.95), Decoding(0.6, 20, 0.95), True),
    Preset("llama3-instruct", "paper: Llama-3.1-8B-Instruct",
           Decoding(0.8, 20, 0.8), Decoding(0.7, 20, 0.8), Decoding(0.9, 0, 0.8)),
    Preset("gpt-oss", "paper: GPT-OSS-20B (high)",
           Decoding(1.2, 0, 1.0), Decoding(1.0, 20, 0.95), Decoding(1.0, 0, 1.0), True),
    # Not in the paper. Small or unknown instruct models: a moderate T_train with the
    # paper's truncation, and T_eval so that T_eff = T_train x T_eval = 1.1, just under
    # the paper's peak (about 1.2); small models fall apart sooner when decoded hot.
    Preset("generic", "not in the paper: small or unknown models",
           Decoding(1.0, 20, 0.8), Decoding(1.1, 20, 0.8), Decoding(0.7, 20, 0.8)),
]}

# The paper's instruction for instruct models, in our words: answer in Python, in a
# markdown code block. Thinking models get no system message (their native template).
SYSTEM_PROMPT = ("You are an expert Python programmer. Solve the user's programming problem "
                 "in Python 3. Give the complete solution in a single markdown code block "
                 "(```python ... ```).")


def detect_preset(model_name: str) -> str:
    """Pick the paper's preset from a model's name; 'generic' when nothing matches."""
    n = model_name.lower()
    big = bool(re.search(r"30b|32b|a3b", n))
    if "qwen3" in n:
        if "thinking" in n:
            return "qwen3-30b-thinking" if big else "qwen3-thinking"
        return "qwen3-30b-instruct" if big else "qwen3-instruct"
    if re.search(r"llama[-_ ]?3", n):
        return "llama3-instruct"
    if "gpt-oss" in n:
        return "gpt-oss"
    return "generic"


BACKENDS = ("llamacpp", "torch", "mlx")


@dataclass(frozen=True)
class SampleConfig:
    prompts: str = opt("builtin", "prompt source: builtin, rstar (the paper's rStar-Coder "
                       "seed_sft), rstar:DIR (a local copy), or a .jsonl/.txt file",
                       metavar="SRC")
    limit: int | None = opt(None, "use only the first N prompts", metavar="N")
    preset: str | None = opt(None, "decoding preset from the paper (default: chosen from the "
                             "model name)", choices=tuple(PRESETS))
    temperature: float | None = opt(None, "T_train, applied first; higher explores more at "
                                    "fork positions (default: the preset's)", metavar="T")
    top_k: int | None = opt(None, "keep the K most likely tokens after temperature; 0 = off "
                            "(default: the preset's)", metavar="K")
    top_p: float | None = opt(None, "then keep the smallest set with mass P; cuts the "
                              "distractor tail; 1.0 = off (default: the preset's)", metavar="P")
    samples_per_prompt: int = opt(1, "answers sampled per prompt (the paper: 1)", metavar="N")
    max_new_tokens: int = opt(4096, "generation cap per answer; answers cut here are kept "
                              "and counted (finish_reason=length)", metavar="N")
    seed: int = opt(0, "sampling seed; each (prompt, sample) gets its own derived seed")
    batch_size: int = opt(8, "sequences decoded together (llama.cpp slots / torch batch)",
                          metavar="N")
    backend: str | None = opt(None, "engine: llamacpp for GGUF, torch for HF folders, mlx on "
                              "Apple silicon (default: automatic)", choices=BACKENDS)
    endpoint: str | None = opt(None, "sample through an OpenAI-compatible server (vLLM, "
                               "llama-server, ssd-local serve) at URL, e.g. "
                               "http://HOST:8000/v1; MODEL names the model it serves",
                               metavar="URL")
    api_key: str | None = opt(None, "API key for --endpoint (never stored in the run)",
                              metavar="KEY")
    concurrency: int = opt(8, "requests in flight with --endpoint", metavar="N")
    chat: bool = opt(False, "with --endpoint: send chat messages and let the server apply "
                     "its template (default: our template, sent as a plain completion)")
    system_prompt: str | None = opt(None, "system message for instruct models (default: "
                                    "answer in Python in a markdown code block)", cli=False)

    # Fields that may change between invocations of the same run (they do not change
    # what a sample is): a larger --limit extends the run, batch size is only speed, and
    # the same model may be served from another address.
    RESUMABLE_CHANGES = ("limit", "batch_size", "backend", "endpoint", "api_key",
                         "concurrency")

    def validate(self) -> None:
        if self.preset is not None and self.preset not in PRESETS:
            raise UserError(f"unknown preset '{self.preset}'; choose one of: "
                            + ", ".join(PRESETS))
        if self.temperature is not None and not 0.0 <= self.temperature <= 10.0:
            raise UserError(f"--temperature {self.temperature} is out of range; use a value "
                            "in 0..10 (the paper uses 0.8 to 1.6)")
        if self.top_k is not None and self.top_k < 0:
            raise UserError(f"--top-k {self.top_k} is negative; use 0 to switch top-k off "
                            "or a positive count such as 20")
        if self.top_p is not None and not 0.0 < self.top_p <= 1.0:
            raise UserError(f"--top-p {self.top_p} is out of range; use a value in (0, 1], "
                            "1.0 switches top-p off")
        for name in ("samples_per_prompt", "max_new_tokens", "batch_size", "concurrency"):
            if getattr(self, name) < 1:
                raise UserError(f"--{name.replace('_', '-')} must be at least 1")
        if self.limit is not None and self.limit < 1:
            raise UserError("--limit must be at least 1")
        if self.backend is not None and self.backend not in BACKENDS:
            raise UserError(f"unknown backend '{self.backend}'; choose one of: "
                            + ", ".join(BACKENDS))
        if self.endpoint is not None and not self.endpoint.startswith(("http://", "https://")):
            raise UserError(f"--endpoint {self.endpoint!r} is not a URL; pass the server's "
                            "OpenAI base URL, e.g. http://127.0.0.1:8080/v1")
        if self.chat and not self.endpoint:
            raise UserError("--chat applies to --endpoint sampling; add --endpoint URL")

    def resolve(self, model_name: str) -> "SampleConfig":
        """Fill the preset-driven fields from the preset (explicit values win)."""
        self.validate()
        preset = PRESETS[self.preset or detect_preset(model_name)]
        d = preset.train
        return replace(
            self, preset=preset.name,
            temperature=d.temperature if self.temperature is None else self.temperature,
            top_k=d.top_k if self.top_k is None else self.top_k,
            top_p=d.top_p if self.top_p is None else self.top_p,
            system_prompt=(None if preset.thinking else SYSTEM_PROMPT)
            if self.system_prompt is None else self.system_prompt)

    @property
    def decoding(self) -> Decoding:
        if self.temperature is None or self.top_k is None or self.top_p is None:
            raise ValueError("resolve() the config before reading its decoding")
        return Decoding(self.temperature, self.top_k, self.top_p)


def to_dict(cfg: Any) -> dict[str, Any]:
    return asdict(cfg)


def from_dict(cls: type, data: dict[str, Any]) -> Any:
    names = {f.name for f in fields(cls)}
    return cls(**{k: v for k, v in data.items() if k in names})


def field_defaults(cls: type) -> dict[str, Any]:
    return {f.name: f.default for f in fields(cls) if f.default is not MISSING}


# Learning rates. Full fine-tuning: the paper's cosine 5e-6 -> 1e-6. LoRA needs a much
# higher rate (its update starts at zero and is low-rank); see README "Training" for the
# measurement behind the default.
LR_FULL = 5e-6
LR_LORA = 2e-4
MIN_LR_RATIO = 0.2  # the paper decays 5e-6 -> 1e-6


TRAIN_BACKENDS = ("torch", "mlx")


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
    batch_size: int = opt(4, "examples per forward pass (per process)", metavar="N")
    effective_batch: int = opt(32, "examples per optimizer step, reached by gradient "
                               "accumulation (paper: 32)", metavar="N")
    max_seq_len: int = opt(4096, "longer examples are cut (paper: 65,536)", metavar="N")
    batching: str = opt("group", "group: batch examples of similar length (fastest measured "
                        "on CPU); pack: concatenate examples, attention kept inside each (pays "
                        "off with flash attention on GPU); none: padded in sample order",
                        choices=("group", "pack", "none"))
    gradient_checkpointing: bool = opt(False, "recompute activations to save memory")
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
                         "gradient_checkpointing", "batch_size")

    @property
    def peak_lr(self) -> float:
        return self.lr if self.lr is not None else (LR_FULL if self.full else LR_LORA)

    def validate(self) -> None:
        for name in ("lora_rank", "lora_alpha", "batch_size", "effective_batch", "max_seq_len",
                     "save_every", "keep_checkpoints", "eval_every"):
            if getattr(self, name) < 1:
                raise UserError(f"--{name.replace('_', '-')} must be at least 1")
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
        if self.effective_batch < self.batch_size:
            raise UserError(f"--effective-batch {self.effective_batch} is smaller than "
                            f"--batch-size {self.batch_size}; raise it or lower --batch-size")

    def eval_decoding(self, preset_name: str | None) -> Decoding:
        p = PRESETS.get(preset_name or "generic", PRESETS["generic"]).eval
        return Decoding(p.temperature if self.t_eval is None else self.t_eval,
                        p.top_k if self.eval_top_k is None else self.eval_top_k,
                        p.top_p if self.eval_top_p is None else self.eval_top_p)


QUANT_TYPES = ("f16", "q8_0", "q6_k", "q5_k_m", "q4_k_m")


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
    n_ctx: int = opt(8192, "context window of the server, in tokens", metavar="N")
    threads: int | None = opt(None, "CPU threads (default: all cores)", metavar="N")
