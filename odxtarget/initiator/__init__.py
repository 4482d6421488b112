"""The initiator side: a libiscsi binding and the ODX copy client behind ``odxtarget copy``."""
