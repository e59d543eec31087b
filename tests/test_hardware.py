"""Tests of hardware: CPU detection from /proc/cpuinfo, precision resolution, speed warnings."""

from __future__ import annotations

import pytest

from mtlcc_tf import hardware

# Abridged /proc/cpuinfo of the three CPUs this project has run on (two processors each).
SAPPHIRE_RAPIDS = """processor\t: 0
model name\t: Intel(R) Xeon(R) Processor
flags\t\t: fpu avx2 avx512f avx512_bf16 amx_bf16 amx_tile amx_int8

processor\t: 1
model name\t: Intel(R) Xeon(R) Processor
flags\t\t: fpu avx2 avx512f avx512_bf16 amx_bf16 amx_tile amx_int8
"""
COOPER_LAKE = "model name\t: Intel(R) Xeon(R) Processor\nflags\t\t: fpu avx2 avx512f avx512_bf16\n"
EPYC_ZEN3 = "model name\t: AMD EPYC\nflags\t\t: fpu sse4_2 avx avx2 fma\n"


@pytest.mark.parametrize(
    "text, kind, policy",
    [
        (SAPPHIRE_RAPIDS, hardware.CPU_AMX, "mixed_bfloat16"),
        (COOPER_LAKE, hardware.CPU_AVX512_BF16, "float32"),
        (EPYC_ZEN3, hardware.CPU_AVX2, "float32"),
        ("model name\t: old\nflags\t\t: fpu sse2\n", hardware.CPU_OTHER, "float32"),
    ],
)
def test_auto_precision_follows_the_cpu(text, kind, policy):
    cpu = hardware.parse_cpuinfo(text)
    assert cpu.kind == kind
    precision = hardware.resolve_precision("auto", cpu, [])
    assert precision.policy == policy and precision.requested == "auto"
    assert precision.reason  # says why, for the log and config.json


def test_parse_cpuinfo_reads_the_first_processor_and_the_speed_flags():
    cpu = hardware.parse_cpuinfo(SAPPHIRE_RAPIDS)
    assert cpu.model == "Intel(R) Xeon(R) Processor"
    assert cpu.speed_flags() == {
        "amx_bf16": True,
        "amx_tile": True,
        "avx512_bf16": True,
        "avx512f": True,
        "avx2": True,
    }
    assert hardware.parse_cpuinfo("").kind == hardware.CPU_OTHER


def test_cpu_info_of_a_missing_file_is_an_unknown_cpu(tmp_path):
    cpu = hardware.cpu_info(str(tmp_path / "missing"))
    assert cpu.model == "unknown CPU" and cpu.kind == hardware.CPU_OTHER


def test_auto_precision_on_gpus_needs_bf16_tensor_cores_on_every_gpu():
    cpu = hardware.parse_cpuinfo(EPYC_ZEN3)
    assert hardware.resolve_precision("auto", cpu, [(9, 0)]).policy == "mixed_bfloat16"
    assert hardware.resolve_precision("auto", cpu, [(8, 0), (7, 0)]).policy == "float32"
    # A GPU decides, whatever the CPU.
    amx = hardware.parse_cpuinfo(SAPPHIRE_RAPIDS)
    assert hardware.resolve_precision("auto", amx, [(7, 5)]).policy == "float32"


def test_an_explicit_precision_is_kept_everywhere():
    for text in (SAPPHIRE_RAPIDS, EPYC_ZEN3):
        cpu = hardware.parse_cpuinfo(text)
        for policy in ("float32", "mixed_float16", "mixed_bfloat16"):
            precision = hardware.resolve_precision(policy, cpu, [(9, 0)])
            assert (precision.policy, precision.requested) == (policy, policy)


def test_auto_measures_bf16_on_cpus_with_avx512_bf16_but_no_amx():
    cpu = hardware.parse_cpuinfo(COOPER_LAKE)
    calls = []

    def probe(speedup):
        return lambda: calls.append(speedup) or speedup

    fast = hardware.resolve_precision("auto", cpu, [], probe(2.4))
    assert fast.policy == "mixed_bfloat16" and "2.40x" in fast.reason
    assert hardware.resolve_precision("auto", cpu, [], probe(0.6)).policy == "float32"
    assert hardware.resolve_precision("auto", cpu, []).policy == "float32"  # no probe
    # Other CPUs are decided by their flags alone, and explicit values are never probed.
    for text in (SAPPHIRE_RAPIDS, EPYC_ZEN3):
        hardware.resolve_precision("auto", hardware.parse_cpuinfo(text), [], probe(9.0))
    hardware.resolve_precision("float32", cpu, [], probe(9.0))
    assert calls == [2.4, 0.6]


def test_the_probe_is_cached_per_cpu(tmp_path, monkeypatch):
    monkeypatch.setenv("MTLCC_TF_CACHE", str(tmp_path))
    measured = []
    monkeypatch.setattr(hardware, "measure_bfloat16_speedup", lambda: measured.append(1) or 1.7)
    cpu = hardware.parse_cpuinfo(COOPER_LAKE)
    assert hardware.cached_bfloat16_speedup(cpu) == 1.7
    assert hardware.cached_bfloat16_speedup(cpu) == 1.7
    assert len(measured) == 1
    hardware.cached_bfloat16_speedup(hardware.parse_cpuinfo(SAPPHIRE_RAPIDS))
    assert len(measured) == 2  # another CPU, another measurement


def test_the_probe_measures_a_positive_ratio():
    assert hardware.measure_bfloat16_speedup(repeats=1) > 0


def test_speed_warning_is_true_on_each_kind_of_cpu():
    amx, avx512_bf16, avx2 = (
        hardware.parse_cpuinfo(text) for text in (SAPPHIRE_RAPIDS, COOPER_LAKE, EPYC_ZEN3)
    )
    # What auto picks never warns.
    for cpu in (amx, avx512_bf16, avx2):
        chosen = hardware.resolve_precision("auto", cpu, []).policy
        assert hardware.speed_warning(chosen, False, cpu, [], auto=chosen) is None
    # Against what auto measured on this CPU.
    warning = hardware.speed_warning("mixed_bfloat16", False, avx512_bf16, [], auto="float32")
    assert "auto measured float32 faster" in warning
    warning = hardware.speed_warning("float32", False, avx512_bf16, [], auto="mixed_bfloat16")
    assert "auto measured mixed_bfloat16 faster" in warning
    # Without a measurement: emulated bf16 is slow; float32 with AMX leaves speed behind.
    assert "0.06x" in hardware.speed_warning("mixed_bfloat16", False, avx2, [])
    assert "auto" in hardware.speed_warning("float32", False, amx, [])
    assert "float16" in hardware.speed_warning("mixed_float16", False, amx, [])
    warning = hardware.speed_warning("mixed_bfloat16", True, avx2, [])
    assert "mixed_bfloat16" in warning and "jit_compile" in warning
    assert "jit_compile" not in hardware.speed_warning("mixed_float16", False, avx2, [])
    # On GPUs both are what makes training fast.
    assert hardware.speed_warning("mixed_bfloat16", True, avx2, [(9, 0)]) is None
