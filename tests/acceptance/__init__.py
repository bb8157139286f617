"""Acceptance tests: the ``hookline`` command as a user runs it, as real subprocesses."""
