"""CONTRACT STUB (to be implemented): the set of logical units one SCSI target port presents.

    lu = LogicalUnit(LogicalUnitConfig(name="lun0", backend=MemoryBackend(1 << 30), block_size=512))
    target = ScsiTarget(name="iqn.2026-11.org.odxtarget:demo", luns={0: lu})
    result = target.execute(ScsiCommand(cdb=..., nexus=..., lun=0, data_out=...))
    response = target.task_management(TaskManagementFunction.LOGICAL_UNIT_RESET, nexus, lun=0)
    target.nexus_lost(nexus)      # session ended / connection dropped without logout
    target.nexus_logged_out(nexus)  # clean logout (same effect on SPC-2 reservations)

Rules every implementation keeps:
* ``execute`` never raises: every failure is a status (+ sense) in the ScsiResult;
* all calls come from one thread (the front end's event loop), so no locking is needed inside;
* a LogicalUnit may be mapped into several ScsiTargets; its per-nexus state (unit
  attentions, reservations) lives in the LogicalUnit.
"""
