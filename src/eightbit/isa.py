"""What the CPU can do for int8, read from the operating system (never assumed)."""

from __future__ import annotations

import dataclasses
import functools
import platform
from pathlib import Path

_X86 = ("x86_64", "amd64", "i386", "i686")
_VNNI_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")
_REPORTED = ("avx2", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_int8", "asimddp", "i8mm")


@dataclasses.dataclass(frozen=True)
class CpuFeatures:
    machine: str
    flags: frozenset[str]

    @property
    def is_x86(self) -> bool:
        return self.machine.lower() in _X86

    @property
    def has_vnni(self) -> bool:
        return bool(self.flags & set(_VNNI_FLAGS))

    @property
    def u8s8_can_saturate(self) -> bool:
        """x86 without VNNI multiplies u8 x s8 with vpmaddubsw, which saturates pair sums at int16."""
        return self.is_x86 and not self.has_vnni

    def int8_outlook(self) -> tuple[str, str]:
        """(the limit of int8 over fp32 multiply-accumulate throughput here, why), from the instructions found."""
        if "amx_int8" in self.flags:
            return ("well above 4x", "AMX tile multiplies take int8 matrix products; vector int8 as with VNNI "
                                     "(4 products per 32-bit lane per instruction)")
        if self.has_vnni:
            return ("4x", "VNNI sums 4 u8 x s8 products into each 32-bit lane in one instruction, where fp32 "
                          "does 1 multiply-add per lane")
        if self.is_x86 and "avx2" in self.flags:
            return ("about 2x", "no VNNI: 4 u8 x s8 products per 32-bit lane take two instructions (vpmaddubsw, "
                                "vpmaddwd) and their pair sums saturate at int16")
        if "i8mm" in self.flags:
            return ("8x", "i8mm (smmla) multiplies 2x8 by 8x2 int8 blocks per instruction, 8 times fp32's "
                          "multiply-adds per vector")
        if "asimddp" in self.flags:
            return ("4x", "the dot-product instructions (sdot/udot) sum 4 int8 products per 32-bit lane")
        return ("about 1x", "no int8 dot-product instructions found: int8 saves memory traffic and file size, "
                            "not arithmetic")

    def summary(self) -> str:
        shown = [flag for flag in _REPORTED if flag in self.flags]
        return f"{self.machine}: {' '.join(shown) if shown else 'no SIMD int8 extensions found'}"


@functools.cache
def cpu_features() -> CpuFeatures:
    flags: set[str] = set()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text(errors="replace").splitlines():
            if line.startswith(("flags", "Features")):
                flags.update(line.split(":", 1)[1].split())
                break
    return CpuFeatures(platform.machine(), frozenset(flags))
