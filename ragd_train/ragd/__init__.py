"""ragd itself: its CLI with `ragd train` mounted, its config file, its Embedder protocol."""
