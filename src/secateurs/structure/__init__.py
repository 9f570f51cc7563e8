"""Channel structure of a model: coupled channel groups (from Torch-Pruning's dependency graph), the
channel view every criterion reads groups through, the exact size model, physical surgery, the
replayable plan, and neural implants.
"""
