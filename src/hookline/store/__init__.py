"""Persistence backends behind one Protocol (see ``base``)."""
