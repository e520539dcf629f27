"""The hostile suite: risky calls run in child processes, each of which must work and match
the float64 reference or raise a tpp error, never crash, hang or return a wrong value.
harness.py runs the cases; subjects.py holds the families' correct calls and references."""
