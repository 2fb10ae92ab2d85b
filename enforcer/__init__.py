"""enforcer: a runtime security agent that detects with Falco rules over eBPF and answers."""

__version__ = "0.1.0"
