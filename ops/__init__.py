"""tpp.ops: composite operators, each one JIT-compiled loop nest over primitives."""
from .matmul import MatmulPlan, matmul

__all__ = ["matmul", "MatmulPlan"]
