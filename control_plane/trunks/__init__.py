"""Trunks and outbound routing rules (SPEC §2.5)."""
