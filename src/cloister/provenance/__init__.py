"""Provenance: what the trusted loader signs about a job, and how anyone checks it offline.

``dsse`` is the Dead Simple Signing Envelope; ``statement`` the in-toto Statement (the provenance manifest) that
travels in it; ``report`` the loader's signed order report. Every verifier fills in an
:class:`~cloister.attest.checks.Checklist` and raises a typed error naming the failed check.
"""
