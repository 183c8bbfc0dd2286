"""Cryptographic recipes of Cloister: digests, canonical JSON, identities, HPKE sealing, streaming AEAD.

These are the safe, high-level functions; nothing else in Cloister touches raw primitives.
"""
