"""The live feed (``WS /api/live``): the tenant's call events from core NATS and periodic stats."""
