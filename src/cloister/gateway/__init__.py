"""The inference gateway: an OpenAI-compatible entry point in front of a deployment's attested replicas.

It checks API keys against ledger accounts, meters tokens against on-ledger credit, picks replicas by the
verifiable selection rule, compares their signed commitments, reports liars and laggards to the contracts, and
signs a receipt for every answer. It never needs to read a sealed prompt to do any of that.
"""
