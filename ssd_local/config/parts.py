"""The pieces every stage config is made of: the field helper (a default plus the help the
CLI and the TUI are generated from), the one list of each name set, and the option groups
that several stages share (decoding, engine, endpoint, sandbox limits). Each shared field
is defined here once; a stage config composes the groups it needs."""

from __future__ import annotations

from dataclasses import MISSING, asdict, dataclass, field, fields
from typing import Any

from ..errors import UserError
from .presets import Decoding

# -- the one list of each ------------------------------------------------------------------
BACKENDS = ("llamacpp", "torch", "mlx")  # sampling engines (also eval's)
TRAIN_BACKENDS = ("torch", "mlx")
QUANT_TYPES = ("f16", "q8_0", "q6_k", "q5_k_m", "q4_k_m")  # most precise first
STAGES = ("sample", "train", "fuse", "export")  # a run's stages, in order


def opt(default: Any, help: str, *, choices: tuple[str, ...] | None = None,
        metavar: str | None = None, cli: bool = True) -> Any:
    """A config field: default value plus the metadata the CLI/TUI are built from."""
    return field(default=default, metadata={"help": help, "choices": choices,
                                            "metavar": metavar, "cli": cli})


def help_of(cls: type, f: Any) -> str:
    """A field's help as ``cls`` words it: a stage may word a shared field for itself
    (``HELP``: sampling's --temperature is T_train, eval's a decoding temperature)."""
    return getattr(cls, "HELP", {}).get(f.name) or f.metadata.get("help", "")


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def require_positive(cfg: Any, *names: str) -> None:
    for name in names:
        if getattr(cfg, name) < 1:
            raise UserError(f"{flag(name)} must be at least 1")


def require_choice(value: str | None, choices: tuple[str, ...], what: str) -> None:
    if value is not None and value not in choices:
        raise UserError(f"unknown {what} '{value}'; choose one of: " + ", ".join(choices))


# -- shared groups -------------------------------------------------------------------------
@dataclass(frozen=True)
class DecodingOptions:
    """Explicit decoding; a field left at None takes the stage's own default (sampling: the
    preset's T_train; evaluation: a run's T_eval, else the model's own setting)."""

    temperature: float | None = opt(None, "temperature, applied first; higher explores more "
                                    "at fork positions (default: the preset's T_train when "
                                    "sampling; a run's T_eval when evaluating)", metavar="T")
    top_k: int | None = opt(None, "then keep the K most likely tokens; 0 = off (default: "
                            "as for --temperature)", metavar="K")
    top_p: float | None = opt(None, "then keep the smallest set with mass P; cuts the "
                              "distractor tail; 1.0 = off (default: as for --temperature)",
                              metavar="P")

    def validate_decoding(self) -> None:
        if self.temperature is not None and not 0.0 <= self.temperature <= 10.0:
            raise UserError(f"--temperature {self.temperature} is out of range; use a value "
                            "in 0..10 (the paper uses 0.8 to 1.6)")
        if self.top_k is not None and self.top_k < 0:
            raise UserError(f"--top-k {self.top_k} is negative; use 0 to switch top-k off "
                            "or a positive count such as 20")
        if self.top_p is not None and not 0.0 < self.top_p <= 1.0:
            raise UserError(f"--top-p {self.top_p} is out of range; use a value in (0, 1], "
                            "1.0 switches top-p off")

    def over(self, base: Decoding) -> Decoding:
        """``base`` with this config's explicit values in place: explicit wins."""
        return base.overridden(self.temperature, self.top_k, self.top_p)


@dataclass(frozen=True)
class EngineOptions:
    backend: str | None = opt(None, "engine: llamacpp for GGUF, torch for HF folders, mlx on "
                              "Apple silicon (default: automatic)", choices=BACKENDS)
    batch_size: int = opt(8, "sequences decoded together (llama.cpp slots / torch or mlx "
                          "batch)", metavar="N")


@dataclass(frozen=True)
class EndpointOptions:
    endpoint: str | None = opt(None, "generate through an OpenAI-compatible server (vLLM, "
                               "llama-server, ssd-local serve) at URL, e.g. "
                               "http://HOST:8000/v1; MODEL names the model it serves",
                               metavar="URL")
    api_key: str | None = opt(None, "API key for --endpoint (never stored in the run)",
                              metavar="KEY")
    concurrency: int = opt(8, "requests in flight with --endpoint", metavar="N")
    chat: bool = opt(False, "with --endpoint: send chat messages and let the server apply "
                     "its template (default: our template, sent as a plain completion; "
                     "always chat when no model is named)")

    def validate_endpoint(self) -> None:
        if self.endpoint is not None and not self.endpoint.startswith(("http://", "https://")):
            raise UserError(f"--endpoint {self.endpoint!r} is not a URL; pass the server's "
                            "OpenAI base URL, e.g. http://127.0.0.1:8080/v1")


@dataclass(frozen=True)
class Generation(DecodingOptions, EngineOptions, EndpointOptions):
    """What every generating stage (sample, eval) shares."""

    seed: int = opt(0, "sampling seed; each (prompt, sample) gets its own derived seed")

    def in_flight(self) -> int:
        """Sequences (or requests) in flight: --concurrency through an endpoint, else
        --batch-size. The one place that decides it."""
        return self.concurrency if self.endpoint else self.batch_size

    def validate_generation(self) -> None:
        self.validate_decoding()
        self.validate_endpoint()
        require_positive(self, "batch_size", "concurrency")
        require_choice(self.backend, BACKENDS, "backend")


@dataclass(frozen=True)
class SandboxLimits:
    """What one sample may use in the sandbox."""

    timeout_s: float = 10.0  # wall clock for the whole job; then everything it started dies
    test_timeout_s: float = 6.0  # per test case (stdio/call)
    memory_mb: int = 4096  # RLIMIT_AS
    file_size_mb: int = 64  # RLIMIT_FSIZE (also caps captured stdout/stderr)
    open_files: int = 64  # RLIMIT_NOFILE
    processes: int = 32  # RLIMIT_NPROC: processes/threads the sample may add
    output_chars: int = 2000  # stdout/stderr kept in the Outcome


_LIMITS = SandboxLimits()


@dataclass(frozen=True)
class SandboxOptions:
    timeout: float = opt(_LIMITS.timeout_s, "seconds a sample may run (all its tests)",
                         metavar="S")
    memory_mb: int = opt(_LIMITS.memory_mb, "memory limit per sample, MB", metavar="MB")
    workers: int | None = opt(None, "samples run in parallel (default: all cores)",
                              metavar="N")

    def limits(self) -> SandboxLimits:
        return SandboxLimits(timeout_s=self.timeout,
                             test_timeout_s=min(self.timeout, _LIMITS.test_timeout_s),
                             memory_mb=self.memory_mb)

    def validate_sandbox(self) -> None:
        if self.timeout <= 0:
            raise UserError("--timeout must be positive")
        require_positive(self, "memory_mb")


# -- helpers -------------------------------------------------------------------------------
def to_dict(cfg: Any) -> dict[str, Any]:
    return asdict(cfg)


def from_dict(cls: type, data: dict[str, Any]) -> Any:
    names = {f.name for f in fields(cls)}
    return cls(**{k: v for k, v in data.items() if k in names})


def field_defaults(cls: type) -> dict[str, Any]:
    return {f.name: f.default for f in fields(cls) if f.default is not MISSING}
