"""State that every gateway serving the same RBD images shares, kept in RADOS (docs/cluster.md)."""
