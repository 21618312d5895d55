"""POST /api/routing/replay: recent calls through a draft routing configuration (shared/replay.py)."""
