"""How the precision setting and the CPU's flags pick the torch backend's number format."""

from __future__ import annotations

import pytest

from services.embedder.model import auto_backend
from services.embedder.precision import cpu_flags, cpu_has_bf16, resolve_precision
from services.embedder.priority import Priority, default_priority

_ZEN4 = "processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512_bf16 avx512_vnni\n\nprocessor\t: 1\n"
_SKYLAKE = "processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512bw\n"
_GRAVITON3 = "processor\t: 0\nFeatures\t: fp asimd sve i8mm bf16\n"


def test_cpu_flags_are_read_from_x86_and_arm_cpuinfo() -> None:
    assert "avx512_bf16" in cpu_flags(_ZEN4)
    assert "bf16" in cpu_flags(_GRAVITON3)
    assert cpu_flags("") == set()
    assert not cpu_has_bf16(_SKYLAKE)  # AVX-512 without its BF16 extension


@pytest.mark.parametrize(
    ("precision", "device", "has_bf16", "expected"),
    [
        ("auto", "cpu", True, "bf16"),
        ("auto", "cpu", False, "fp32"),
        ("auto", "cuda", False, "fp16"),
        ("auto", "cuda:1", True, "fp16"),
        ("fp32", "cpu", True, "fp32"),
        ("bf16", "cpu", False, "bf16"),  # asked for: honoured, even where it is slow
        ("fp32", "cuda", True, "fp32"),
    ],
)
def test_auto_takes_bf16_only_where_the_cpu_has_it(
    precision: str, device: str, has_bf16: bool, expected: str
) -> None:
    assert resolve_precision(precision, device, lambda: has_bf16) == expected  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("device", "precision", "has_bf16", "onnx_installed", "expected"),
    [
        ("cpu", "auto", True, True, "torch"),  # bf16 autocast
        ("cpu", "auto", False, True, "onnx"),  # torch's fp32 vectors, faster
        ("cpu", "fp32", True, True, "onnx"),  # fp32 asked for: the faster fp32
        ("cpu", "bf16", False, True, "torch"),  # only torch computes in bf16
        ("cpu", "auto", False, False, "torch"),  # onnxruntime not installed
        ("cuda", "auto", False, True, "torch"),
        ("cuda:1", "fp32", False, True, "torch"),
    ],
)
def test_auto_backend_is_torch_where_it_wins_onnx_elsewhere(
    device: str, precision: str, has_bf16: bool, onnx_installed: bool, expected: str
) -> None:
    backend = auto_backend(device, precision, lambda: has_bf16, lambda: onnx_installed)  # type: ignore[arg-type]
    assert backend == expected


def test_unmarked_requests_one_text_is_a_query_a_list_is_bulk() -> None:
    assert default_priority(1) is Priority.QUERY
    assert default_priority(2) is Priority.BULK
