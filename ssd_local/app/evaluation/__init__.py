"""Evaluation: benchmarks, a sandbox for untrusted code, pass@k with intervals, and the
base-vs-distilled temperature sweep. Nothing here imports an engine at load time."""
