"""tpp.bench: the `tpp-bench` microbenchmark CLI.

Modules: `timing` (warm-up, repetitions, median and spread), `repeat` (a
JIT-compiled loop that calls a kernel N times, so kernel-level timings carry no
Python overhead), `baselines` (numpy's fastest expression per kind, as a
table), `suites` (rows: unary, binary, the quick suite), `gemm_suite` (GEMM
rows beside np.matmul, as % of the FMA peak), `peak` (the FMA peak, a
JIT-compiled loop), `blas` (numpy's BLAS on one thread), `compile_time` (JIT
compile time, cold and from the disk cache), `report` (table and JSON
output), `cli` (argument parsing).

Nothing in tpp imports this package.
"""
