"""The bottom layer's configuration: every stage's frozen config, composed from shared
option groups, the paper's presets, and the one list of each name set (backends, quant
types, stages). Nothing here imports an engine, the core or a UI."""

from .parts import (BACKENDS, QUANT_TYPES, STAGES, TRAIN_BACKENDS, DecodingOptions,
                    EndpointOptions, EngineOptions, Generation, SandboxLimits, SandboxOptions,
                    field_defaults, flag, from_dict, help_of, opt, to_dict)
from .handoff import HANDOFF_TARGETS, LMSTUDIO_PUBLISHER, HandoffConfig, PushConfig
from .presets import (FALLBACK_PRESET, PRESETS, SYSTEM_PROMPT, Decoding, Preset,
                      detect_preset, preset)
from .stages import (AUTO_BATCH, DEFAULT_SWEEP, LR_FULL, LR_LORA, MIN_LR_RATIO, CompareConfig,
                     EvalConfig, ExportConfig, LensConfig, SampleConfig, ServeConfig,
                     TrainConfig)

__all__ = [
    "BACKENDS", "QUANT_TYPES", "STAGES", "TRAIN_BACKENDS", "DecodingOptions",
    "EndpointOptions", "EngineOptions", "Generation", "SandboxLimits", "SandboxOptions",
    "field_defaults", "flag", "from_dict", "help_of", "opt", "to_dict", "FALLBACK_PRESET", "PRESETS",
    "SYSTEM_PROMPT", "Decoding", "Preset", "detect_preset", "preset", "DEFAULT_SWEEP",
    "AUTO_BATCH", "LR_FULL", "LR_LORA", "MIN_LR_RATIO", "CompareConfig", "EvalConfig", "ExportConfig",
    "LensConfig",
    "SampleConfig", "ServeConfig", "TrainConfig",
    "HANDOFF_TARGETS", "LMSTUDIO_PUBLISHER", "HandoffConfig", "PushConfig",
]
