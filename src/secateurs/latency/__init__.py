"""Everything about time: timing a model, the runtimes it is timed in (PyTorch, onnxruntime, CSR),
per-layer latency tables, latency-aware channel allocation, and the facts of the machine a timing
ran on.
"""
