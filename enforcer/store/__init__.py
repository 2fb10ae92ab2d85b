"""The embedded audit store: detections, decisions and action outcomes in SQLite (FTS5 for
the alert text), written by the agent as it runs and rebuildable from the JSONL audit log."""
