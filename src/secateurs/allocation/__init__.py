"""How many units each layer or group loses: element selection, channel allocation under the
global / layerwise / normalized policies, the one bisection to a target, the realised report.

Every mask crossing a function boundary is a keep-mask (True = keep).
"""
