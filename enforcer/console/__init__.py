"""The read-only web console over the audit store (`enforcer ui`, or the agent's /ui)."""
