"""The core is sans-IO: nothing under odxtarget/scsi may import asyncio, socket, threading, os or mmap."""

import ast
import pathlib

import odxtarget.scsi

FORBIDDEN = {"asyncio", "socket", "threading", "os", "mmap", "selectors", "subprocess"}
PACKAGE_DIR = pathlib.Path(odxtarget.scsi.__file__).parent


def _imported_modules(path: pathlib.Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_core_modules_import_no_io():
    files = sorted(PACKAGE_DIR.rglob("*.py"))
    assert len(files) > 10
    offenders = {str(f.relative_to(PACKAGE_DIR)): sorted(_imported_modules(f) & FORBIDDEN) for f in files}
    assert {name: bad for name, bad in offenders.items() if bad} == {}


def test_checker_catches_a_forbidden_import(tmp_path):
    sample = tmp_path / "bad.py"
    sample.write_text("import os.path\nfrom socket import socket\n")
    assert _imported_modules(sample) & FORBIDDEN == {"os", "socket"}
