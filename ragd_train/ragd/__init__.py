"""ragd itself: its CLI with `ragd train` mounted, its config file, its Embedder protocol, its chat
prompt and context layout, its hybrid search, and the commands that put a trained model to use in it."""
