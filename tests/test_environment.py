"""What a run records of where it ran, and the README's "Tested with" line kept equal to constraints.txt."""

from pathlib import Path

import torch

import slip_hf
from slip_hf.environment import describe_environment, environment_differences, run_environment

ROOT = Path(__file__).parent.parent


def test_a_run_records_versions_processor_gpus_and_world_size():
    environment = run_environment(world_size=2)
    versions, hardware = environment["versions"], environment["hardware"]
    assert list(versions) == ["python", "torch", "transformers", "datasets", "accelerate", "torch_geometric",
                              "huggingface_hub", "slip_hf"]
    assert versions["torch"] == torch.__version__ and versions["slip_hf"] == slip_hf.__version__
    assert hardware["world_size"] == 2 and hardware["processor"] not in ("", "unknown")
    expected_gpu = "none" if not torch.cuda.is_available() else torch.cuda.get_device_name(0)
    assert (hardware["gpu"] if hardware["gpu"] == "none" else hardware["gpu"]["name"]) == expected_gpu
    assert describe_environment(environment).endswith(", 2 processes")


def test_differences_name_each_entry_that_differs_and_unrecorded_runs():
    a = {"versions": {"torch": "2.13.0", "transformers": "5.24.0"}, "hardware": {"processor": "AMD EPYC", "gpu": "none"}}
    b = {"versions": {"torch": "2.13.0", "transformers": "5.25.0"},
         "hardware": {"processor": "AMD EPYC", "gpu": {"name": "NVIDIA H200", "count": 1, "memory_gib": 139.8}}}
    assert environment_differences([a, a]) == []
    assert environment_differences([a, b]) == ["transformers", "gpu"]
    assert environment_differences([a, {}]) == ["unrecorded"]
    assert "1 x NVIDIA H200 (139.8 GiB)" in describe_environment(b)


def test_readme_tested_with_line_is_constraints_txt():
    pins = [line.split("==") for line in (ROOT / "constraints.txt").read_text().splitlines()
            if line.strip() and not line.startswith("#")]
    assert {name for name, _ in pins} >= {"torch", "transformers", "datasets", "accelerate", "torch-geometric", "huggingface_hub"}
    line = "Pinned: " + ", ".join(f"{name} {version}" for name, version in pins) + "."
    assert line in (ROOT / "README.md").read_text().splitlines()
    assert 'pip install -c constraints.txt -e ".[test]"' in (ROOT / "README.md").read_text()
