"""The protocol modules stay sans-IO: only server.py may import I/O modules (house style 6)."""

import ast
import pathlib

import pytest

import odxtarget.transport.iscsi as package

FORBIDDEN = {"asyncio", "socket", "mmap", "os", "selectors", "threading", "time"}
PURE = ["pdu.py", "session.py", "task.py", "tmf.py", "connection.py"]


@pytest.mark.parametrize("name", PURE)
def test_module_imports_no_io(name):
    source = (pathlib.Path(package.__file__).parent / name).read_text()
    imported = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module.split(".")[0])
    assert not imported & FORBIDDEN, imported & FORBIDDEN
