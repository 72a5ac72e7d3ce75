"""Stage 5: A/B reports of each model against its base (IR metrics, RAGAS, answers)."""
