"""What runs inside the TEE: the trusted loader, its workspace, checkpoints, metering and the secrets vault.

Start with :class:`cloister.runtime.loader.TrustedLoader`; the owner side opens results with
:func:`cloister.runtime.results.open_result`. The contract is written down in ``docs/runtime.md``.
"""
