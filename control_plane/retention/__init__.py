"""Retention: the daily purge of what each tenant's ``retention_days`` no longer keeps."""
