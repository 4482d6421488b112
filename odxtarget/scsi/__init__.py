"""The sans-IO SCSI block device core (SPC-4 / SBC-4).

Nothing in this package opens sockets, starts threads or touches files: a front end hands
``ScsiTarget.execute`` a CDB, the data-out bytes and the I_T nexus, and gets back status,
data-in and sense. Storage is reached only through the ``odxtarget.storage.backend.Backend``
protocol that the caller injects.
"""

from odxtarget.scsi.types import ItNexus, ScsiCommand, ScsiResult, TaskManagementFunction

__all__ = ["ItNexus", "ScsiCommand", "ScsiResult", "TaskManagementFunction"]
