"""The composition layer: every composite operator is written on it.

    spec.py   what a composite is (named tensors, loops as data, scratch, barriers)
    emit.py   a composite as ONE LLVM function run by each thread of a team
    call.py   the call path: checks, geometry and argument memos, scratch, the pool

An op is a descriptor (frozen dataclass, the cache key) with `composite(target)`
plus a few lines binding arrays by name; see ops/bias_act.py for a small one.
"""
from .call import CompositeDesc, Memo, Program, aligned, check_rows, program, run_checked, threads_arg
from .emit import Context, TensorRef
from .spec import BARRIER, STACK_BYTES, Composite, Loop, Scratch, Tensor

__all__ = ["BARRIER", "STACK_BYTES", "Composite", "CompositeDesc", "Context", "Loop", "Memo", "Program",
           "Scratch", "Tensor", "TensorRef", "aligned", "check_rows", "program", "run_checked", "threads_arg"]
