"""The routing engine: a bare ASGI app that answers Cloudonix webhooks with CXML."""
