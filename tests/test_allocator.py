"""keep_freed_memory: a block a step frees stays in the process for later steps, instead of going back to the kernel."""

import platform
import subprocess
import sys

import pytest

from frugalign.allocator import keep_freed_memory

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc",
                                reason="a glibc setting")

MIB = 2**20

PROBE = """
import os, sys, torch
from frugalign.allocator import keep_freed_memory
applied = keep_freed_memory() if sys.argv[1] == "keep" else False
def resident():
    return int(open("/proc/self/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
before = resident()
t = torch.empty(64 * 2**20)  # 256 MiB of activations a step writes, then frees
t.fill_(1.0)
del t
print(applied, resident() - before)
"""


def kept_after_free(mode: str) -> tuple[bool, int]:
    out = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, check=True).stdout.split()
    return out[0] == "True", int(out[1])


def test_a_freed_block_stays_in_the_process_for_later_steps():
    applied, kept = kept_after_free("keep")
    assert applied
    assert kept > 200 * MIB
    _, default_kept = kept_after_free("default")
    assert default_kept < 50 * MIB  # what the setting changes: by default the block goes back to the kernel


def test_a_malloc_setting_in_the_environment_wins(monkeypatch):
    monkeypatch.setenv("MALLOC_ARENA_MAX", "2")
    assert keep_freed_memory() is False
