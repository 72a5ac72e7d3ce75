"""Stage 4: RAFT data and LoRA training of ragd's chat model (MLX, Unsloth, PEFT)."""
