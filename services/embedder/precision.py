"""Which number format the torch backend computes in: fp32, or bf16 where the CPU has it.

bf16 runs under torch's autocast, so weights, layer norms and softmax stay fp32 and only
the matrix products drop to bf16; that keeps vectors within cosine 0.9999 of fp32.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Literal

Precision = Literal["auto", "fp32", "bf16"]
Resolved = Literal["fp32", "bf16", "fp16"]

# CPU flags of native bf16 arithmetic: x86 AVX512-BF16 and AMX, Arm's BF16 extension.
_BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16", "bf16"})
_CPUINFO = Path("/proc/cpuinfo")


def cpu_flags(cpuinfo: str) -> set[str]:
    """The feature flags of the first CPU in /proc/cpuinfo's text (x86 ``flags``, Arm ``Features``)."""
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return set(value.split())
    return set()


def cpu_has_bf16(cpuinfo: str | None = None) -> bool:
    """The CPU computes bf16 natively, and torch has oneDNN to use it."""
    import torch

    if not torch.backends.mkldnn.is_available():  # type: ignore[no-untyped-call]
        return False
    if cpuinfo is None:
        # torch's own probe is private; the kernel's flag list says the same.
        try:
            cpuinfo = _CPUINFO.read_text()
        except OSError:
            return False
    return bool(cpu_flags(cpuinfo) & _BF16_FLAGS)


def resolve_precision(
    precision: Precision, device: str, has_bf16: Callable[[], bool] = cpu_has_bf16
) -> Resolved:
    """The format to run in: auto picks fp16 on CUDA, bf16 on a CPU that has it, else fp32."""
    if precision != "auto":
        return precision
    if device.startswith("cuda"):
        return "fp16"
    return "bf16" if has_bf16() else "fp32"
