"""Shared test helpers: the libiscsi initiator binding, the daemon and tgtd launchers, and the
iscsi-test-cu output parser."""
