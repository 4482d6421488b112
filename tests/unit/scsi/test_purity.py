"""The core is sans-IO: nothing under odxtarget/scsi may import asyncio, socket, threading, os or mmap,
nor the metrics exporter's library (the core counts in plain ints, docs/metrics.md)."""

import ast
import pathlib

import odxtarget.scsi

FORBIDDEN = {"asyncio", "socket", "threading", "os", "mmap", "selectors", "subprocess", "prometheus_client"}
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
    sample.write_text("import os.path\nfrom socket import socket\nfrom prometheus_client.core import Metric\n")
    assert _imported_modules(sample) & FORBIDDEN == {"os", "socket", "prometheus_client"}


def test_tcmu_ring_imports_no_io():
    """The TCMU ring codec is sans-IO too: it works on any buffer laid out like the mapping,
    which is how the simulated kernel drives it (docs/lio.md, "Testing")."""
    import odxtarget.transport.tcmu.ring as tcmu_ring

    assert _imported_modules(pathlib.Path(tcmu_ring.__file__)) & FORBIDDEN == set()


#: The copy manager plans and schedules; threads and event loops belong to whoever runs its
#: storage work (the daemon's workers), and files to the modules that do that work.
COPY_FORBIDDEN = {"asyncio", "socket", "threading", "selectors", "subprocess", "mmap", "concurrent",
                  "prometheus_client"}
#: I/O on files: only the copy package's step-execution module (ROD files) may do it; copying
#: LU data is odxtarget/storage/copy_work.py's.
COPY_FILE_IO = {"os", "fcntl", "tempfile", "shutil"}
COPY_STEP_EXECUTION = {"rod_files.py"}


def test_copy_planner_modules_use_no_threads_loops_or_files():
    import odxtarget.copy

    package = pathlib.Path(odxtarget.copy.__file__).parent
    files = sorted(package.glob("*.py"))
    names = {f.name for f in files}
    assert {"manager.py", "job.py", "running.py", "background.py", "token_store.py", "token.py", "lists.py",
            "params.py"} <= names
    offenders = {}
    for path in files:
        forbidden = COPY_FORBIDDEN | (set() if path.name in COPY_STEP_EXECUTION else COPY_FILE_IO)
        bad = sorted(_imported_modules(path) & forbidden)
        if bad:
            offenders[path.name] = bad
    assert offenders == {}
