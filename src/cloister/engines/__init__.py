"""Engines: content-addressed bundles of code that the trusted loader runs on decrypted inputs.

An engine is a folder with an ``engine.toml`` (:mod:`cloister.engines.manifest`), packed deterministically so its
digest is the same on every machine (:mod:`cloister.engines.bundle`). The loader starts it as a separate process
and talks to it only through a ``job.json``, files and environment variables (:mod:`cloister.engines.job`,
:mod:`cloister.engines.runner`). The contract is written down in ``docs/engines.md``.
"""
