"""The built-in chat inference engine bundle; its code is the ``chat_engine`` package next to ``engine.toml``."""
