"""Stage 2: the sentence-transformers bi-encoder (MNRL + Matryoshka)."""
