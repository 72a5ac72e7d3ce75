"""Stage 1, generate-data: snapshot, synthetic queries, hard negatives, judge, split."""
