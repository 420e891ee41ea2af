"""Stand-in providers: one module per third-party API, each with ``register(server)``."""
