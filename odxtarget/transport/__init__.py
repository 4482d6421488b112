"""Front ends: they move bytes between initiators and the SCSI core.

* ``odxtarget.transport.iscsi`` -- the native RFC 7143 iSCSI target (asyncio);
* ``odxtarget.transport.tcmu``  -- the handler of kernel LIO's TCMU user backstores (docs/lio.md).
"""
