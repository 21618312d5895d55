"""Config snapshots (DESIGN §2): compile a tenant's routing config from the database and publish it to
the JetStream KV bucket the engines watch."""
