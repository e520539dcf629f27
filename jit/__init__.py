"""tpp.jit: the llvmlite driver. Targets, IR helpers, compilation, kernel cache.

This layer knows no operator: it turns LLVM IR into callable machine code for a
target and keeps the results.
"""
