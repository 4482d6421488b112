"""The login-side modules stay sans-IO: no sockets, event loops, clocks or OS access."""

from __future__ import annotations

import ast
import importlib
import inspect

import pytest

FORBIDDEN = {"asyncio", "socket", "os", "time", "random", "select", "selectors", "threading", "uvloop"}
MODULES = ["text", "negotiation", "chap", "login", "discovery"]


@pytest.mark.parametrize("name", MODULES)
def test_module_imports_nothing_that_does_io(name):
    module = importlib.import_module(f"odxtarget.transport.iscsi.{name}")
    tree = ast.parse(inspect.getsource(module))
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module.split(".")[0])
    assert not imported & FORBIDDEN
