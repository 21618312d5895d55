"""Inbound routing rules (SPEC §2.4): CRUD and the dry-run ``/test`` endpoint."""
