"""ssd-local: simple self-distillation (SSD) for code models on your own machine."""

__version__ = "0.1.0"
