"""Local `evaluate` metric modules, loaded by path (hub copies are unreachable offline)."""
