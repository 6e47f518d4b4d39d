"""The fault suite (issue 15): real processes, sockets and signals against charflow's
guarantees. Each module names the invariant it checks; docs/guarantees.md lists them."""
