"""``vlb import-original``: move a tenant over from the original Laravel system (docs/migrating.md)."""
