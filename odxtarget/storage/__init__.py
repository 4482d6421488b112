"""Storage back ends: the only layer that touches disks."""
