"""The command line: one module per command; main.py wires them and is the error boundary."""
