"""The provider daemon: loader keys, attested registration, heartbeats and the execution controller.

Start with :class:`cloister.node.controller.ProviderNode`; the platform that produces the TCB is a parameter
(:mod:`cloister.node.platform`), so the same node runs on a devnet's simulated TEE and on real hardware.
"""
