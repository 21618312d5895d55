"""Agent groups, their members, and the balancer's live counters per group (SPEC §2.3, §2.9)."""
