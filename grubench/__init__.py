"""grubench: when should I use a GRU, and when an LSTM?

Importing grubench has no effect on the process; the command-line tools apply their process
settings themselves (`grubench.runtime.configure`).
"""

__version__ = "0.1.0"
