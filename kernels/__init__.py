"""tpp.kernels: the primitive catalog. One module per family, each with its record
(family.py: the kinds, the descriptor checks, the operands, the numpy reference of
each kind and the IR emitter per backend). Nothing here knows about Python arrays."""
