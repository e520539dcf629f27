"""The hostile suite: risky calls run in child processes, and each must work and match the
float64 reference or raise a tpp error, never crash, hang or return a wrong value.

    harness.py        the runner (one pytest test per case; a crash or a hang fails the case
                      that was running and the rest go on in a fresh child) and the rules
                      (documented errors, tolerances)
    subjects.py       every family's correct call and its reference
    test_fields.py    hostile descriptor fields, one at a time, for 23 families
    test_arguments.py hostile call arguments (views, broadcasts, read-only, misaligned,
                      aliasing, 0-size, wrong dtypes and shapes) for 28 subjects
    test_calls.py     BRGEMM offsets and address lists, empty batches, numerics at the
                      edges, C descriptors
    test_cache.py     spoiled disk-cache entries and cache directories
    test_fork.py      fork after and during use, multiprocessing pools, threads
    test_knobs.py     environment knobs, each in a fresh interpreter (knob_probe.py)
    test_aot.py       hostile tpp-aot specs
    test_fuzz.py      hypothesis over hostile fields and arguments (fixed seed)
    test_pinned_fields.py  the bugs this suite found, pinned in process

One case by hand: `PYTHONPATH=tests python -m hostile.test_fields 'unary_relu-m-int16_200'`.
"""
