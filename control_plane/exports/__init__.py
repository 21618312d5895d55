"""Exports of call records and CDRs: streamed as the client reads, or written in the background into a
gzip file in the NATS object store (SPEC §2.7, §2.9)."""
