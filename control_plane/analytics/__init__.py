"""Analytics: per-tenant call aggregates and the endpoints that read them."""
