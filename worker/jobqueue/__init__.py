"""The queue glue: the JSON job contract, the producer, the RQ consumer, result messages, recovery.

Every touch of RQ's private internals lives in rq_compat.py, pinned by tests/jobqueue/test_rq_compat.py;
tests/jobqueue/test_rq_seam.py keeps them there.
"""
