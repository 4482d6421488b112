"""``python -m odxtarget``: the same as the ``odxtarget`` console script."""

import sys

from odxtarget.cli import main

if __name__ == "__main__":
    sys.exit(main())
