"""The control plane: a Litestar API for tenants, config, call records and analytics."""
