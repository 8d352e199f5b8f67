"""Which NUMA node a shared area's pages live on: mbind(2) and get_mempolicy(2).

No maintained Python binding places one buffer (py-libnuma, last released in 2021, and
numactl set a whole process's policy), so this calls the two system calls through
ctypes. ``bind`` sets MPOL_BIND to one node on the pages under a buffer and moves the
ones already there (MPOL_MF_MOVE). shm's area is tmpfs memory (/dev/shm), which keeps
the policy with the shared object (the kernel's shmem_set_policy), so both processes'
faults follow it; mbind(2)'s caveat that MAP_SHARED mappings ignore it is about
file-backed ones.
"""

from __future__ import annotations

import ctypes
import mmap
import os

MPOL_BIND = 2
MPOL_MF_STRICT, MPOL_MF_MOVE = 1, 2
MPOL_F_NODE, MPOL_F_ADDR = 1, 2
SYSCALLS = {"x86_64": (237, 239), "aarch64": (235, 236)}  # mbind, get_mempolicy
MASK_WORDS = 16  # nodes 0-1023
_libc = ctypes.CDLL(None, use_errno=True)


def _numbers() -> tuple[int, int]:
    machine = os.uname().machine
    if machine not in SYSCALLS:
        raise OSError(f"NUMA binding: no system call numbers for {machine}")
    return SYSCALLS[machine]


def _pages(view: memoryview) -> tuple[int, int]:
    """(page-aligned start, length) covering the buffer."""
    holder = ctypes.c_char.from_buffer(view)  # exports the buffer: released below
    try:
        address = ctypes.addressof(holder)
    finally:
        del holder
    start = address - address % mmap.PAGESIZE
    end = address + len(view)
    return start, -(-(end - start) // mmap.PAGESIZE) * mmap.PAGESIZE


def bind(view: memoryview, node: int) -> None:
    """Keep the pages under ``view`` (a writable buffer over a mapping) on ``node``;
    OSError when the kernel refuses (no such node, no NUMA support)."""
    if not 0 <= node < MASK_WORDS * 64:
        raise OSError(f"NUMA node {node} is out of range")
    mask = (ctypes.c_ulong * MASK_WORDS)()
    mask[node // 64] = 1 << (node % 64)
    start, length = _pages(view)
    done = _libc.syscall(_numbers()[0], ctypes.c_void_p(start), ctypes.c_ulong(length),
                         MPOL_BIND, mask, ctypes.c_ulong(MASK_WORDS * 64 + 1),
                         MPOL_MF_MOVE | MPOL_MF_STRICT)
    if done != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"mbind to node {node}: {os.strerror(err)}")


def node_of(view: memoryview) -> int:
    """The node of the first page under ``view`` (touched first: an untouched page has
    none)."""
    start, _ = _pages(view)
    node = ctypes.c_int(-1)
    done = _libc.syscall(_numbers()[1], ctypes.byref(node), None, ctypes.c_ulong(0),
                         ctypes.c_void_p(start), MPOL_F_NODE | MPOL_F_ADDR)
    if done != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"get_mempolicy: {os.strerror(err)}")
    return node.value
