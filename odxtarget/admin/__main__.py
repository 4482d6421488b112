"""``python -m odxtarget.admin``: the same as the ``odxtargetcli`` console script."""

import sys

from odxtarget.admin.shell import main

if __name__ == "__main__":
    sys.exit(main())
