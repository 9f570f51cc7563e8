"""Where code runs: devices (one option, auto/cpu/cuda/mps), the process group and collectives of
torchrun, optional dependencies (extras) with their install hints, and glibc malloc settings.

Imports nothing above `secateurs.io`.
"""
