"""Fixtures for tests and benchmarks: small nnU-Net model folders with random weights (:mod:`.random_model`) and
click sequences on phantoms (:mod:`.click_sequence`).

Not used by the library itself: ``inference`` imports neither this package nor ``training``, which
:mod:`.random_model` uses.
"""
