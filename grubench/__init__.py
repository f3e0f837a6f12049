"""grubench: when should I use a GRU, and when an LSTM?"""

from grubench import runtime as _runtime

_runtime.configure_xla()
_runtime.configure_malloc()

__version__ = "0.1.0"
