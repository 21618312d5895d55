"""Registration, login, opaque bearer tokens, roles and the tenant's users."""
