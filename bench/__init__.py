"""tpp.bench: the `tpp-bench` microbenchmark CLI.

Modules: `timing` (warm-up, repetitions, median and spread), `repeat` (a
JIT-compiled loop that calls a kernel N times, so kernel-level timings carry no
Python overhead), `baselines` (numpy's fastest expression per kind, as a
table), `suites` (rows: unary, binary, the quick suite), `gemm_suite` (GEMM
rows beside np.matmul, as % of the FMA peak), `dot_gemm` (bf16 and u8s8 GEMM
rows, VNNI-packed B, as % of the dot-instruction peak), `brgemm_suite` (BRGEMM
rows, the raw kernel on a hand-filled tpp_tensor table), `matmul_suite`
(tpp.ops.matmul against np.matmul on 1..T threads, and the CPU topology),
`peak` (FMA and dot-instruction peaks, JIT-compiled loops), `blas` (numpy's
BLAS thread count), `compile_time` (JIT
compile time, cold and from the disk cache), `report` (table and JSON
output), `cli` (argument parsing).

Nothing in tpp imports this package.
"""
