"""odxtarget: a userspace SCSI block target with ODX (T10 token-based copy offload).

Layers, from the wire inwards:

* ``odxtarget.transport`` -- front ends (native iSCSI, later TCMU) that move bytes;
* ``odxtarget.scsi``      -- the sans-IO SCSI block device core (CDB in, status/data/sense out);
* ``odxtarget.copy``      -- the third-party copy manager (ROD tokens, POPULATE TOKEN, ...);
* ``odxtarget.storage``   -- file-backed extents, the only code that touches disks.
"""

__version__ = "0.1.0"
