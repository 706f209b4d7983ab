"""The names of a projection's variants: the backward ReLU rule, the unpooling, the seed mode.

Plain names, importable without torch, so that the command line offers them as
choices and prints its help without loading the engine (:mod:`.deconv.deconvnet`
documents what each one does).
"""

__all__ = ["RULES", "UNPOOLS", "MODES"]

#: How the reverse pass treats a ReLU: the deconvnet's ReLU of the signal (Zeiler & Fergus),
#: guided backprop (both masks), or the plain gradient (the forward mask).
RULES = ("deconvnet", "guided", "gradient")
#: Unpool with the recorded max-pooling switches, or copy each value to its whole window.
UNPOOLS = ("switches", "nearest")
#: Seed a feature's strongest activation, its whole map, or given positions.
MODES = ("max", "map", "position")
