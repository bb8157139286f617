"""Helpers for tests that open real sockets: a scripted webhook receiver and a server runner."""
