"""Stage 3: the reranker (cross-encoder, or ColBERT late interaction)."""
