"""keep_freed_memory: a block a step frees is reused by the next, not faulted in again from the kernel."""

import platform
import subprocess
import sys
from pathlib import Path

import pytest

from frugalign.allocator import keep_freed_memory

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc",
                                reason="a glibc setting")

PAGES = 65536  # a 256 MiB tensor in 4 KiB pages

PROBE = """
import resource, sys, torch
from frugalign.allocator import keep_freed_memory
applied = keep_freed_memory() if sys.argv[1] == "keep" else False
def step():  # what a training step does with its activations: allocate, write, free
    t = torch.empty(64 * 2**20)
    t.fill_(1.0)
    del t
step()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
step()
print(applied, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def second_step_faults(mode: str) -> tuple[bool, int]:
    out = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, check=True).stdout.split()
    return out[0] == "True", int(out[1])


def huge_pages_always() -> bool:
    path = Path("/sys/kernel/mm/transparent_hugepage/enabled")
    return path.exists() and "[always]" in path.read_text()


def test_the_second_step_reuses_the_first_steps_memory():
    applied, faults = second_step_faults("keep")
    assert applied
    assert faults < PAGES // 20
    if not huge_pages_always():  # with 2 MiB pages glibc's default faults 128 times, not 65,536: nothing to compare
        _, default_faults = second_step_faults("default")
        assert default_faults > PAGES // 2  # what the setting saves: the default maps the block anew


def test_a_malloc_setting_in_the_environment_wins(monkeypatch):
    monkeypatch.setenv("MALLOC_ARENA_MAX", "2")
    assert keep_freed_memory() is False
