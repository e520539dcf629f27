"""A descriptor's LLVM module: what dispatch compiles and Kernel.ir shows."""
from __future__ import annotations

from llvmlite import ir

from .jit.targets import Target


def module_for(desc, target: Target, symbol: str) -> ir.Module:
    """The module defining `symbol`, the descriptor's kernel for target."""
    module = ir.Module(name=symbol)
    module.triple = target.triple
    desc.emit(module, symbol, target)
    return module


def generate_ir(desc, target: Target, symbol: str) -> str:
    return str(module_for(desc, target, symbol))
