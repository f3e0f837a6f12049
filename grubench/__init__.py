"""grubench: when should I use a GRU, and when an LSTM?"""

__version__ = "0.1.0"
