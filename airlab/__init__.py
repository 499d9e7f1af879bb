"""airlab: a command-line research environment for deep learning."""

__version__ = "0.1.0"
