"""tpp.sparse: sparse matrices in composable formats (SparseTIR's axes on the CPU)."""
