"""Code generation: a quantized model's integer program as a C99 library (docs/quantization.md, section 10)."""

from __future__ import annotations

from eightbit.codegen.library import CLibrary, build_library, export_c

__all__ = ["CLibrary", "build_library", "export_c"]
