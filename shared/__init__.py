"""Contracts shared by the control plane and the routing engine: settings base, logging setup,
provider catalogue, enums, snapshot and event structs, and pure rule-matching code. No I/O."""
