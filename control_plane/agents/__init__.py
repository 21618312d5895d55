"""Voice agents (SPEC §2.2) and the provider catalogue route (SPEC §4)."""
