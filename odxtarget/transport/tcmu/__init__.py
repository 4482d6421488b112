"""The LIO front end: a TCMU handler for ``user:odx`` backstores, and LIO set-up via rtslib-fb.

Sans-IO layers: ``ring`` (mailbox and command ring views), ``processor`` (ring <-> SCSI core).
``device`` (uio fd, mapping, configfs actions), ``netlink`` (TCM-USER events), ``handler``
(asyncio), ``lio_config`` (rtslib-fb) and ``frontend`` (what the daemon starts) do I/O.
"""
