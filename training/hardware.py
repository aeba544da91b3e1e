"""Accelerators the planners know: dense bf16 peak and memory, from the vendors' data sheets.

Peaks are *dense* tensor-core bf16 (the sparsity figures on data sheets are twice these), for
the SXM / OAM board unless the name says PCIe or NVL. MFU (model FLOPs utilisation) is measured
against these numbers, so they must be the same ones the trainer divides by.
"""
from __future__ import annotations

from dataclasses import dataclass

GIB = 1 << 30


@dataclass(frozen=True)
class GPU:
    name: str
    bf16_tflops: float  # dense peak, TFLOP/s
    memory_gib: float  # the board's memory as marketed ("80GB" boards hold 80 GiB)
    # Substrings of torch.cuda.get_device_name() that identify this board (all must appear, case-insensitive).
    device_name_parts: tuple[str, ...] = ()

    @property
    def peak_flops(self) -> float:
        return self.bf16_tflops * 1e12

    @property
    def memory_bytes(self) -> int:
        return int(self.memory_gib * GIB)


GPUS: dict[str, GPU] = {
    gpu.name: gpu
    for gpu in (
        GPU("a100-40gb", 312.0, 40, ("a100", "40gb")),
        GPU("a100-80gb", 312.0, 80, ("a100", "80gb")),
        GPU("h100-sxm", 989.5, 80, ("h100", "hbm3")),
        GPU("h100-pcie", 756.5, 80, ("h100", "pcie")),
        GPU("h100-nvl", 835.5, 94, ("h100", "nvl")),
        GPU("gh200", 989.5, 96, ("gh200",)),
        GPU("h200", 989.5, 141, ("h200",)),
        GPU("b200", 2250.0, 180, ("b200",)),
        GPU("l40s", 362.05, 48, ("l40s",)),
        GPU("l4", 121.0, 24, ("l4",)),
        GPU("mi250x", 383.0, 128, ("mi250x",)),
        GPU("mi300x", 1307.4, 192, ("mi300x",)),
        GPU("mi325x", 1307.4, 256, ("mi325x",)),
    )
}

# Short names people type; each means exactly one board.
ALIASES = {"h100": "h100-sxm", "a100": "a100-80gb", "a100-40": "a100-40gb", "a100-80": "a100-80gb"}


def get_gpu(name: str) -> GPU:
    """The table entry for a GPU name or alias (case-insensitive); a clear error lists the known names."""
    key = name.strip().lower().replace("_", "-").replace(" ", "-")
    key = ALIASES.get(key, key)
    if key not in GPUS:
        known = ", ".join(sorted(GPUS) + sorted(ALIASES))
        raise ValueError(f"unknown GPU {name!r}; known: {known}")
    return GPUS[key]


def gpu_for_device_name(device_name: str) -> GPU | None:
    """The board behind a torch.cuda.get_device_name() string, or None when it is not in the table.

    For example "NVIDIA H100 80GB HBM3" is h100-sxm and "NVIDIA A100-SXM4-40GB" is a100-40gb.
    Names are checked most specific first, so "GH200" is not taken for "H200" nor "L40S" for "L4".
    """
    lowered = device_name.lower()
    by_specificity = sorted(GPUS.values(), key=lambda gpu: -sum(len(part) for part in gpu.device_name_parts))
    for gpu in by_specificity:
        if gpu.device_name_parts and all(part in lowered for part in gpu.device_name_parts):
            return gpu
    return None
