"""The webhook audit: every webhook any engine received, body masked."""
