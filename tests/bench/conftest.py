"""Smoke tests of the benchmarks in bench/: each runs end to end at tiny size and writes its figures.

Not unit tests of the product and slow-ish (seconds each), so they live apart from tests/unit and run under
``pytest tests`` (``make test``). No ``__init__.py`` here on purpose: with one, pytest would import this
directory as the package ``bench`` and shadow the repository's bench/ package that these tests import.
"""
