"""Core commands: demo, train, evaluate, run, results (filled in by the foundation)."""

COMMANDS: list = []
