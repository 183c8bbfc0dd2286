"""Consensus over inference replicas: modes, requests, commitments, verdicts, selection, sealing and receipts.

Shared by the replicas (they commit), the gateway (it selects, compares and issues receipts), the ledger contracts
(they decide disputes) and verifiers (they recompute all of it offline). It imports only crypto, attest and errors.
"""
