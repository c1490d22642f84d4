"""What a run ran on: the versions of the stack and the hardware, recorded beside every result.

A number is tied to the code and the machine that produced it. [`run_environment`] is what `run_config.json`,
the model card and the leaderboard's JSON record; [`environment_differences`] says which entries differ between
runs (the leaderboard's footnote). The versions the measured tables (docs/results.md) come from are pinned
in the repository's `constraints.txt`, and [`stack_versions`] reads the installed ones with the same package
names.
"""

import platform
from importlib import metadata
from pathlib import Path
from typing import Any

STACK = ("torch", "transformers", "datasets", "accelerate", "torch_geometric", "huggingface_hub", "slip_hf")
"""The distributions whose versions a run records, after Python's."""


def _installed_version(distribution: str) -> str:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return "not installed"


def stack_versions() -> dict[str, str]:
    """`{"python": "3.11.7", "torch": "2.13.0+cpu", ...}`: Python and each distribution of `STACK` as installed."""
    return {"python": platform.python_version(), **{name: _installed_version(name) for name in STACK}}


def processor_model() -> str:
    """The CPU's model name (`/proc/cpuinfo`'s "model name" on Linux), else what `platform` knows of it."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text(errors="replace").splitlines():
            if line.lower().startswith(("model name", "hardware", "cpu model")) and ":" in line:
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine() or "unknown"


def gpu_description() -> dict[str, Any] | str:
    """`{"name", "count", "memory_gib"}` of the visible CUDA devices (the first one's name and memory), or `"none"`."""
    import torch

    if not torch.cuda.is_available() or torch.cuda.device_count() == 0:
        return "none"
    properties = torch.cuda.get_device_properties(0)
    return {"name": properties.name, "count": torch.cuda.device_count(),
            "memory_gib": round(properties.total_memory / 2**30, 1)}


def run_environment(world_size: int = 1) -> dict[str, Any]:
    """What a run records of where it ran.

    Args:
        world_size (`int`): processes in the run (`accelerate launch --num_processes`).

    Returns:
        `{"versions": stack_versions(), "hardware": {"processor", "gpu", "world_size"}}`, JSON-ready.

    Example:

    ```python
    >>> from slip_hf.environment import run_environment
    >>> sorted(run_environment()["versions"])[:3]
    ['accelerate', 'datasets', 'huggingface_hub']
    ```
    """
    return {"versions": stack_versions(),
            "hardware": {"processor": processor_model(), "gpu": gpu_description(), "world_size": world_size}}


def describe_environment(environment: dict[str, Any]) -> str:
    """One line for people: `"Python 3.11.7, torch 2.13.0+cpu, ...; AMD EPYC, no GPU, 1 process"`."""
    versions = environment.get("versions", {})
    hardware = environment.get("hardware", {})
    gpu = hardware.get("gpu", "none")
    gpu_text = "no GPU" if gpu == "none" else f"{gpu['count']} x {gpu['name']} ({gpu['memory_gib']} GiB)"
    world = hardware.get("world_size", 1)
    stack = ", ".join(f"{'Python' if name == 'python' else name} {version}" for name, version in versions.items())
    return f"{stack}; {hardware.get('processor', 'unknown processor')}, {gpu_text}, {world} process{'es' if world != 1 else ''}"


def environment_differences(environments: list[dict[str, Any]]) -> list[str]:
    """The entries (`"transformers"`, `"processor"`, ...) whose values differ between `environments`; a missing
    environment (a run recorded before slip_hf 0.3) counts as `"unrecorded"`."""
    if any(not environment for environment in environments):
        return ["unrecorded"] if len(environments) > 1 else []
    differing = []
    for section in ("versions", "hardware"):
        keys = sorted({key for environment in environments for key in environment.get(section, {})})
        for key in keys:
            values = {repr(environment.get(section, {}).get(key)) for environment in environments}
            if len(values) > 1:
                differing.append(key)
    return differing


__all__ = ["STACK", "describe_environment", "environment_differences", "gpu_description", "processor_model",
           "run_environment", "stack_versions"]
