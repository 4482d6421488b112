"""The libiscsi binding now lives in :mod:`odxtarget.initiator.libiscsi` (``odxtarget copy`` uses
it too). This module re-exports every name, private ones included, so tests keep importing
``tests.support.libiscsi`` unchanged."""

from odxtarget.initiator import libiscsi as _binding

globals().update({name: value for name, value in vars(_binding).items() if not name.startswith("__")})
