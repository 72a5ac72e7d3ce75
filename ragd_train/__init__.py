"""ragd-train: fine-tune retrieval models on your own ragd index."""

__version__ = "0.1.0"
