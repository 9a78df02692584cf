"""Test suite (a package, so that bench/ can import tests.support)."""
