"""conda-platform: the shared domain and everything that runs inside conda."""

__version__ = "0.1.0"
