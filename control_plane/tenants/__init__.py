"""The tenant's own settings (SPEC §2.1, §2.7a, §2.9) and its Cloudonix domains with their webhook keys."""
