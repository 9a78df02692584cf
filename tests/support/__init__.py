"""Helpers shared by the tests and bench/: fault injection (faults.py) and a real app server (appserver.py).

Not tests themselves; `from tests.support import faults` from the repository root.
"""
