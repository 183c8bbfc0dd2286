"""Attestation: evidence → claims (**verify**: signatures, chains, freshness), claims + policy → verdict
(**validate**). Platforms: ``snp``, ``tdx``, ``nvgpu`` and the simulated ``sim``; the composite TCB binds them.
"""
