"""Fixtures for tests and benchmarks: small nnU-Net model folders with random weights (:mod:`.random_model`).

Not used by the library itself; ``inference`` does not import it, so inference no longer imports training.
"""
