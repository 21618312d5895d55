"""The routing engine: a bare app (granian's RSGI, or ASGI) that answers Cloudonix webhooks with CXML."""
