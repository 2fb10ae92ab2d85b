"""Adapters: the only modules that import third-party clients (kubernetes, pyroute2, bcc).
They translate those clients' errors into enforcer.errors."""
