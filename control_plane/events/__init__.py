"""Call events from the engines into PostgreSQL: the durable consumer and the batch writer."""
