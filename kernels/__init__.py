"""tpp.kernels: the primitive catalog. Per family, the kinds, the numpy reference
of each, and the IR emitter. Nothing here knows about Python arrays."""
