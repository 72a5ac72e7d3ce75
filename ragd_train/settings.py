"""Every workflow setting, declared once: type, bounds, default, help, the rules that read it, the
``ragd train`` flag that sets it and the name it had before.

Everything else is derived from the models below:

* ``config/schema.yaml``, the JSON schema Snakemake validates the config against (``python -m
  ragd_train.settings`` rewrites it and ``docs/settings.md``; a test checks both are up to date);
* which settings each rule reads (``rule_settings``): every rule passes exactly that part as
  ``params: settings=settings_of("<rule>")``, so a rule reruns when, and only when, a setting it
  reads changes, and no rule script reads ``snakemake.config``;
* the flags of ``ragd train ...`` and their help (``flags_of``, used by ``ragd_train/cli.py``);
* the old names, still read for one release and reported as deprecated in one line (``migrate``).

Adding a hyperparameter is one ``setting(...)`` line here plus its use.
"""

from __future__ import annotations

import copy
import json
import sys
from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints

# The rules that read settings (``workflow`` = read while the Snakefile is parsed).
RULES = (
    "generate_queries",
    "build_training_data",
    "train_embeddings",
    "evaluate_embeddings",
    "train_reranker",
    "evaluate_reranker",
    "build_raft",
    "train_lora",
    "evaluate_llm",
)
WORKFLOW = "workflow"
# Rules that may call an LLM through ``ollama:``; whether they do depends on the config (ollama_keys).
LLM_RULES = ("generate_queries", "build_training_data", "build_raft", "evaluate_embeddings", "evaluate_llm")
SEED_DEFAULT = 42


def setting(
    default: Any,
    help: str,
    readers: tuple[str, ...],
    *,
    flags: Mapping[str, str] | None = None,
    old: str | None = None,
    **constraints: Any,
) -> Any:
    """A field: ``help`` (its first sentence is the flag's help), the rules that read it,
    ``flags`` (``{command: flag name}``) and ``old`` (the dotted name it had before)."""
    unknown = [r for r in readers if r not in (*RULES, WORKFLOW)]
    if unknown:
        raise ValueError(f"unknown reader rules {unknown}")
    extra = {"readers": list(readers), "flags": dict(flags or {}), "old": old}
    return Field(default, description=" ".join(help.split()), json_schema_extra=extra, **constraints)


def _unique(values: list[Any]) -> list[Any]:
    if len(set(values)) != len(values):
        raise ValueError("items must be unique")
    return values


UniqueList = Field(min_length=1, json_schema_extra={"uniqueItems": True})


class Section(BaseModel):
    # NaN passes every bound (it compares false), and inf trains NaN weights: both refused
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


# --------------------------------------------------------------------------------------- corpora


class Corpus(Section):
    source: Literal["ragd", "documents", "jsonl", "beir"] = Field(
        description="Where the chunks come from: a ragd data dir, a folder of documents, a JSONL "
        "snapshot, or a BEIR corpus."
    )
    path: str = Field(min_length=1, description="The ragd data dir, folder or file.")
    collection: str = Field("ragd_documents", description="ragd's Chroma collection (source: ragd).")
    chunk_size: int = Field(800, ge=50, description="Characters per chunk (source: documents).")
    chunk_overlap: int = Field(100, ge=0, description="Characters shared by neighbouring chunks.")
    glob: list[str] = Field(["*.md", "*.txt"], description="Files read from a documents folder.")
    # optional: absent, never null (as ollama.host; the schema drops a null default)
    questions: str = Field(
        None,
        min_length=1,
        description="JSONL of natural questions (query, documents: the ids of the documents that "
        "answer it) for the embeddings report's headline and promotion gate; the held-out synthetic "
        "split is reported beside it.",
    )
    limit: int = Field(None, ge=1, description="Read only the first N documents.")
    chat_history: str = Field(
        None,
        min_length=1,
        description="ragd's chat history folder (ragd writes ~/.ragd/chat_history/*.json): the user's own "
        "questions. generate.chat_eval_share of them are held out and reported; the rest become "
        "training queries labelled by the corpus-only teacher (never by ragd's citations alone).",
    )


# At most 100 characters: a name becomes part of file names (models/.NAME-reranker.pid...@host.*.tmp)
# that must stay within the file system's 255.
CORPUS_NAME_MAX = 100
CorpusName = Annotated[
    str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.]*$", max_length=CORPUS_NAME_MAX)
]

# ------------------------------------------------------------------------------ generate-data

Q, B = ("generate_queries",), ("build_training_data",)


class GenerateSettings(Section):
    """Synthetic queries, hard negatives, the quality filter and the split (generate-data)."""

    query_generator: Literal["auto", "ollama", "local", "nollm"] = setting(
        "auto",
        "Query generator: auto = Ollama if reachable, else the no-LLM generator; local = an "
        "in-process model (local_model).",
        Q + B,
        flags={"generate-data": "generator"},
        old="training.query_generator",
    )
    nollm_strategies: Annotated[
        list[Literal["heading", "claim", "ict", "keywords", "crop"]], Field(min_length=1)
    ] = setting(
        ["heading", "ict", "keywords"],
        "Strategies of the no-LLM generator.",
        Q,
        old="training.nollm_strategies",
    )
    local_model: str = setting(
        "HuggingFaceTB/SmolLM2-135M-Instruct",
        "The in-process query writer of query_generator: local.",
        Q,
        old="training.local_model",
    )
    queries_per_chunk: int = setting(
        2, "Queries per chunk.", Q, ge=1, le=20, flags={"generate-data": "queries_per_chunk"},
        old="training.queries_per_chunk",
    )  # fmt: skip
    hard_negatives_per_query: int = setting(
        5,
        "Hard negatives mined per query.",
        B,
        ge=0,
        le=50,
        flags={"generate-data": "negatives"},
        old="training.hard_negatives_per_query",
    )
    quality_filter: bool = setting(
        True,
        "Drop queries the filter rejects (the LLM judge with an LLM, else the round trip).",
        B,
        old="training.quality_filter",
    )
    test_ratio: float = setting(
        0.2,
        "Share of documents held out for testing, chosen per document before any query is generated "
        "or filtered (documents with identical content share a side).",
        Q + B,
        gt=0,
        lt=1,
        old="training.test_ratio",
    )
    dev_ratio: float = setting(
        0.1,
        "Share of documents held out as the dev split: neither trained on nor tested, it chooses how "
        "much of the fine-tuning the shipped model keeps (embeddings.interpolation).",
        Q + B,
        ge=0,
        lt=1,
    )
    chat_eval_share: float = setting(
        0.3,
        "Share of the chat history's questions held out for the report (by a hash of the question, so "
        "new questions never move the others); the rest are training queries.",
        B,
        ge=0,
        le=1,
    )
    chat_pairs: int = setting(
        4,
        "Teacher-labelled pairs per training question from the chat history (real questions are worth "
        "more than generated ones; each pair is drawn from the teacher's top candidates).",
        B,
        ge=1,
        le=20,
    )
    heldout_strategies: Annotated[
        list[Literal["claim", "ict", "heading", "keywords", "crop"]], Field(min_length=1)
    ] = setting(
        ["claim"],
        "No-LLM strategies of the dev and test queries, whatever generator writes the training queries: "
        "one query per held-out chunk, never filtered by a retriever. A claim is the chunk's conclusion "
        "sentence, taken out of its passage for the evaluation (held-out passage), so that copied "
        "wording alone does not find it.",
        Q,
    )


class MiningSettings(Section):
    """Hard-negative mining, the teacher and the quality filter's thresholds."""

    model: str = setting(
        "sentence-transformers/all-MiniLM-L6-v2", "Dense retriever for mining and the round-trip filter.", B
    )
    candidates: int = setting(
        50, "Top candidates per query taken from each retriever before fusion.", B, ge=1
    )
    bm25_weight: float = setting(
        1.0, "Weight of BM25 in reciprocal-rank fusion (dense has weight 1).", B, ge=0
    )
    relative_margin: float = setting(
        0.05,
        "False-negative guard; a candidate's dense score must be at most (1 - margin) x the positive's.",
        B,
        ge=0,
        le=1,
    )
    exclude_same_document: bool = setting(True, "Never mine a negative from the query's own document.", B)
    batch_size: int = setting(64, "Encoding batch size.", B, ge=1)
    teacher_pairs: bool = setting(
        True,
        "Label one pair of the teacher's top candidates per query (the query's own document "
        "excluded) with the margin of a BM25 + dense z-score fusion, for MarginMSE distillation.",
        B,
    )
    teacher_bm25_share: float = setting(
        0.3,
        "Weight of BM25's z-score in the teacher (the dense model's weight is 1 - share).",
        B,
        ge=0,
        lt=1,
    )
    roundtrip_top_k: int = setting(
        10, "No-LLM filter; the positive must rank in the base retriever's top k.", B, ge=1
    )
    judge_min_score: int = setting(3, "LLM-judge filter; minimum score on a 1-5 scale.", B, ge=1, le=5)


# -------------------------------------------------------------------------------- embeddings

E = ("train_embeddings",)


class EmbeddingsSettings(Section):
    """models/{corpus}-embeddings: the fine-tuned sentence-transformers bi-encoder."""

    base_model: str = setting(
        "sentence-transformers/all-MiniLM-L6-v2",
        "Base sentence-transformers model (a hub id, a cached model or a local directory).",
        E + ("evaluate_embeddings", "evaluate_reranker", "evaluate_llm"),
        flags={"embeddings": "base_model"},
        old="training.embedding_base_model",
    )
    epochs: int = setting(
        1,
        "Passes over the training data at most (the budget or max_steps may stop earlier). One pass "
        "measured best on SciFact; two lost (docs/results.md).",
        E,
        ge=1,
        flags={"embeddings": "epochs"},
        old="training.embedding_epochs",
    )
    batch_size: int = setting(
        32, "Examples per optimizer step.", E, ge=2, flags={"embeddings": "batch_size"},
        old="training.embedding_batch_size",
    )  # fmt: skip
    learning_rate: float = setting(
        2.0e-5, "Peak learning rate.", E, gt=0, flags={"embeddings": "learning_rate"},
        old="training.embedding_learning_rate",
    )  # fmt: skip
    warmup_ratio: float = setting(
        0.1,
        "Share of the training steps spent warming the learning rate up.",
        E,
        ge=0,
        lt=1,
        old="training.embedding_warmup_ratio",
    )
    max_seq_length: int = setting(
        128,
        "Tokens per text while training (shorter is faster on CPU); the saved model keeps the base "
        "model's own length for encoding.",
        E,
        ge=16,
        old="training.embedding_max_seq_length",
    )
    max_examples: int | None = setting(
        3200,
        "Training examples seen at most (steps = this / batch_size, within epochs): the training length "
        "comes from the data and this number, never from the clock, so the same inputs give the same "
        "model on a busy machine. 3200 = 100 steps of 32, about 6 minutes on 2 CPU cores at 128 tokens "
        "(docs/results.md); null = every epoch.",
        E,
        ge=1,
        flags={"embeddings": "max_examples"},
    )
    budget_minutes: float = setting(
        0,
        "Optional wall-clock budget of the training loop (0 = none, the default). When set, the steps are "
        "cut to what fits at a step time measured before training, so the model then depends on the "
        "machine's load; the metadata and the report say the step count came from the clock.",
        E,
        ge=0,
        flags={"embeddings": "budget_minutes"},
        old="training.embedding_budget_minutes",
    )
    max_steps: int | None = setting(
        None,
        "Exactly this many optimizer steps; overrides epochs, max_examples and budget_minutes.",
        E,
        ge=1,
        flags={"embeddings": "max_steps"},
        old="training.embedding_max_steps",
    )
    precision: Literal["auto", "fp32", "bf16"] = setting(
        "auto",
        "Training arithmetic: bf16 autocast (fp32 master weights) or fp32. auto = bf16 on a CPU with "
        "native bf16 (AVX512-BF16 or AMX) or a CUDA GPU that supports it, else fp32; recorded in "
        "training_metadata.json.",
        E,
        flags={"embeddings": "precision"},
    )
    interpolation: Annotated[
        list[Annotated[float, Field(ge=0, le=1)]], UniqueList, AfterValidator(_unique)
    ] = setting(
        [0.0, 0.25, 0.5, 0.75, 1.0],
        "Weights of the fine-tuning tried after training (WiSE-FT: base + w x (fine-tuned - base)); the "
        "one with the best NDCG@10 on the dev split is shipped, ties going to the smaller weight. 0 "
        "ships the base weights: the report then says to keep the base. [1.0] turns the choice off.",
        E,
    )
    dev_corpus: int = setting(
        1000,
        "Chunks searched when choosing the weight: the dev documents' chunks, the dev queries' mined "
        "candidates, then other chunks in a seeded order.",
        E,
        ge=10,
    )
    loss: Literal["auto", "mnrl", "cached_mnrl", "margin_mse", "distill_kl"] = setting(
        "auto",
        "Training loss. auto = MarginMSELoss on the corpus-only teacher's labelled pairs when every "
        "training record carries one (generate-data writes them when mining.teacher_pairs is on), "
        "the listwise distill_kl (DistillKLDivLoss) when every record carries the teacher's scored "
        "candidate list (your own --data; bench/bench_embeddings.py writes such lists), else "
        "CachedMultipleNegativesRankingLoss on CPU (memory bounded by the mini-batch) and plain "
        "MultipleNegativesRankingLoss on a GPU.",
        E,
        old="training.embedding_loss",
    )
    mini_batch_size: int = setting(
        16, "Forward-pass chunk of the cached loss (bounds memory).", E, ge=1,
        old="training.embedding_mini_batch_size",
    )  # fmt: skip
    hard_negatives: int = setting(
        1,
        "Hard negatives per training example given to the loss (more costs time per step).",
        E,
        ge=0,
        old="training.embedding_hard_negatives",
    )
    matryoshka_dims: (
        Literal["auto", "none"]
        | Annotated[list[Annotated[int, Field(ge=8)]], UniqueList, AfterValidator(_unique)]
    ) = setting(
        "auto",
        "Matryoshka dimensions: comma-separated dims, 'auto' (the model's d, d/2, d/4, d/8) or 'none' (off).",
        E,
        flags={"embeddings": "matryoshka_dims"},
        old="training.matryoshka_dims",
    )


# ---------------------------------------------------------------------------------- reranker

R, RE = ("train_reranker",), ("evaluate_reranker",)


class RerankerSettings(Section):
    """models/{corpus}-reranker and its report reports/{corpus}-reranker."""

    kind: Literal["auto", "cross-encoder", "colbert"] = setting(
        "auto",
        "cross-encoder (ragd loads it), colbert (late interaction) or auto: cross-encoder when "
        "base_model is a trained cross-encoder available offline, else colbert from fallback_model "
        "(a fresh cross-encoder head made rankings worse in bench/bench_reranker.py). colbert is a "
        "late-interaction MultiVectorEncoder (sentence-transformers' native ColBERT, "
        "PyLate-compatible), usable through ragd_train.reranker.scoring.FineTunedReranker.",
        R,
        flags={"reranker": "kind"},
    )
    base_model: str = setting(
        "cross-encoder/ms-marco-MiniLM-L-6-v2",
        "Base model (ragd's default reranker); a hub id, a cached model or a local directory.",
        R + RE,
        flags={"reranker": "base_model"},
    )
    fallback_model: str = setting(
        "sentence-transformers/all-MiniLM-L6-v2",
        "Used, with a message, when base_model is not available offline: its weights start the "
        "ColBERT model (kind auto or colbert) or a cross-encoder with a fresh scoring head.",
        R + RE,
    )
    loss: Literal["bce", "lambda"] = setting(
        "bce",
        "Binary cross-entropy or listwise LambdaLoss. bce = BinaryCrossEntropyLoss on (query, "
        "passage) pairs labelled 1/0, positives weighted by the number of negatives; lambda = "
        "LambdaLoss (NDCG-Loss2++) over the positive and its negatives. ColBERT always trains with "
        "MultipleNegativesRankingLoss.",
        R,
        flags={"reranker": "loss"},
    )
    epochs: int = setting(1, "Passes over the training data at most.", R, ge=1, flags={"reranker": "epochs"})
    batch_size: int = setting(
        16,
        "Scored (query, passage) pairs per step (listwise: queries per step = batch_size / (1 + negatives)).",
        R,
        ge=2,
        flags={"reranker": "batch_size"},
    )
    learning_rate: float = setting(
        2.0e-5, "Peak learning rate.", R, gt=0, flags={"reranker": "learning_rate"}
    )
    warmup_ratio: float = setting(
        0.1, "Share of the training steps spent warming the learning rate up.", R, ge=0, lt=1
    )
    max_length: int = setting(
        256,
        "Tokens of query + passage the reranker reads (longer is slower on CPU).",
        R + RE,
        ge=16,
        flags={"reranker": "max_length"},
    )
    negatives_per_query: int = setting(
        5,
        "Hard negatives per query; mined ones first, topped up from other documents.",
        R,
        ge=1,
        le=50,
        flags={"reranker": "negatives"},
    )
    mini_batch_size: int = setting(
        16, "LambdaLoss forward-pass chunk (bounds memory; no effect on the result).", R, ge=1
    )
    max_examples: int | None = setting(
        256,
        "Training queries seen at most (as embeddings.max_examples: the length never depends on the "
        "clock); null = every epoch.",
        R,
        ge=1,
        flags={"reranker": "max_examples"},
    )
    budget_minutes: float = setting(
        0,
        "Optional wall-clock budget of the training loop, 0 = none (as embeddings.budget_minutes).",
        R,
        ge=0,
        flags={"reranker": "budget_minutes"},
    )
    max_steps: int | None = setting(
        None,
        "Exactly this many optimizer steps; overrides epochs, max_examples and budget_minutes.",
        R,
        ge=1,
        flags={"reranker": "max_steps"},
    )
    candidates: int = setting(
        50, "Evaluation; the embedding model's top candidates per query that the rerankers reorder.", RE, ge=1
    )


# ------------------------------------------------------------------------------ llm and RAFT

F, L = ("build_raft",), ("train_lora",)


class RaftSettings(Section):
    """RAFT training data for the chat-model adapter (training_data/{corpus}/raft.jsonl)."""

    distractors: int = setting(
        3, "RAFT k: distractors per example, taken from the mined hard negatives.", F, ge=1, le=20,
        flags={"llm": "distractors"}, old="training.raft_distractors",
    )  # fmt: skip
    oracle_fraction: float = setting(
        0.8,
        "RAFT p: share of examples that keep the oracle chunk in their context.",
        F,
        ge=0,
        le=1,
        flags={"llm": "oracle_fraction"},
        old="training.raft_oracle_fraction",
    )
    answers: Literal["auto", "ollama", "extractive"] = setting(
        "auto",
        "RAFT answers: chain-of-thought answers by Ollama (auto falls back to extractive answers "
        "when it is not reachable); extractive quotes the oracle sentence that best matches the query.",
        F,
        flags={"llm": "answers"},
        old="training.raft_answers",
    )


class LlmSettings(Section):
    """models/{corpus}-llm: the LoRA adapter for ragd's chat model."""

    backend: Literal["auto", "mlx", "unsloth", "peft"] = setting(
        "auto",
        "LoRA trainer: auto = MLX on Apple Silicon, Unsloth with an NVIDIA GPU, else PEFT on CPU. "
        "Resolved when the workflow is read: on a cluster's login node set it explicitly.",
        (WORKFLOW,),
        flags={"llm": "backend"},
        old="training.llm_backend",
    )
    base_model: str = setting(
        None,
        "Base chat model; unset = ragd's own llm.model, the model the user chats with (ragd's "
        "default llama3.2:3b). An Ollama name is read from Ollama's store (~/.ollama/models or "
        "$OLLAMA_MODELS: the very GGUF Ollama runs, peft backend) when it is there, else mapped to "
        "its Hugging Face weights (llama3.2:1b/3b, llama3.1:8b, qwen2.5:0.5b-7b, "
        "smollm2:135m/360m/1.7b); or a local model directory or .gguf file, or a Hugging Face id.",
        L,
        flags={"llm": "base_model"},
        old="training.llm_base_model",
    )
    lora_rank: int = setting(16, "LoRA rank.", L, ge=1, flags={"llm": "rank"}, old="training.lora_rank")
    lora_alpha: int = setting(32, "LoRA alpha.", L, ge=1, flags={"llm": "alpha"}, old="training.lora_alpha")
    lora_dropout: float = setting(0.05, "LoRA dropout.", L, ge=0, lt=1, old="training.lora_dropout")
    lora_target_modules: Annotated[list[str], UniqueList] = setting(
        ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
        "Linear layers that get LoRA weights (names inside a transformer block).",
        L,
        old="training.lora_target_modules",
    )
    epochs: int = setting(
        3, "Training epochs.", L, ge=1, flags={"llm": "epochs"}, old="training.training_epochs"
    )
    learning_rate: float = setting(
        1.0e-3,
        "Peak learning rate (linear warm-up over 10% of the steps, then linear decay). 1e-3 suits the "
        "short default run: on the demo, 16 steps at 2e-4 left the held-out loss at 1.22 (from 1.77) "
        "and the answers unformatted; at 1e-3 it fell to 0.23 (docs/results.md). Lower it for long "
        "runs or large bases.",
        L,
        gt=0,
        flags={"llm": "learning_rate"},
        old="training.llm_learning_rate",
    )
    max_length: int = setting(
        2048,
        "Longest example in tokens; longer RAFT examples are skipped (counted), never truncated.",
        L,
        ge=64,
        old="training.llm_max_length",
    )
    batch_size: int = setting(4, "Examples per optimizer step.", L, ge=1, old="training.llm_batch_size")
    micro_batch_size: int = setting(
        1,
        "Examples per forward/backward pass (peft and unsloth backends): a step's batch_size examples "
        "go through in micro-batches whose gradients are summed, weighted by their answer tokens, so "
        "the step is the same whatever this is; only memory, padding and speed change.",
        L,
        ge=1,
    )
    gradient_checkpointing: bool = setting(
        False,
        "Recompute each layer's activations in the backward pass (peft backend): less memory, more "
        "compute. A demo step (smollm2:135m, bf16, 2 idle CPU cores) took 50 s checkpointed with the 4 "
        "examples in one pass, 27 s in micro-batches of one without it, whose training peaked at "
        "7.2 GiB; turn it on for longer examples or larger bases on a small machine.",
        L,
    )
    max_examples: int = setting(
        64,
        "Training examples seen at most (optimizer steps x batch_size): the step count comes from the "
        "data, every epoch unless this cuts it. 64 = 16 steps, about 6 minutes for smollm2:135m on 2 "
        "idle CPU cores in bf16 with the demo's ~1,400-token RAFT examples (docs/models.md).",
        L,
        ge=1,
        flags={"llm": "max_examples"},
    )
    precision: Literal["auto", "fp32", "bf16"] = setting(
        "auto",
        "Arithmetic of the peft backend's training and of the LLM report's answers: bf16 autocast "
        "(fp32 master weights) or fp32. auto = bf16 on a CPU with native bf16 (AVX512-BF16 or AMX) or "
        "a CUDA GPU that supports it, else fp32 (a 2.0-2.5x faster step on this kind of CPU); "
        "recorded in training_metadata.json. Unsloth and MLX keep their own.",
        L + ("evaluate_llm",),
        flags={"llm": "precision"},
    )
    budget_minutes: float = setting(
        0,
        "Optional wall-clock budget of the training steps: when set (> 0), the steps are also cut to "
        "what fits, by a measured step time, and training_metadata.json says the count came from the "
        "clock (it then depends on the machine's load). 0 = off.",
        L,
        ge=0,
    )
    max_cpu_hours: float = setting(
        6,
        "The peft backend on CPU does not start a run estimated to take longer (or to need more "
        "memory than is free); it prints the GPU/cluster routes instead.",
        L,
        gt=0,
        old="training.llm_max_cpu_hours",
    )


# -------------------------------------------------------------------------------- evaluation

EV, EL = ("evaluate_embeddings",), ("evaluate_llm",)


class EvaluationSettings(Section):
    """The A/B reports and the promotion gate."""

    require_improvement: float = setting(
        0.0,
        "Minimum NDCG@10 gain for the promotion gate: the fine-tuned model must beat its base by "
        "more than 0 and by at least this much, else the report says it lost and `ragd train "
        "evaluate` exits non-zero.",
        EV,
        flags={"evaluate": "require_improvement"},
    )
    require_significant: bool = setting(
        True,
        "Promotion gate; the 95% CI of the headline NDCG@10 gain must lie above zero. A significant "
        "NDCG@10 loss on any test set or search mode rejects the model either way.",
        EV,
    )
    mode: Literal["hybrid", "dense"] = setting(
        "hybrid",
        "Search mode of the headline and the gate; hybrid = ragd's default search (its BM25 fused "
        "with the dense index by reciprocal rank fusion). Both modes are always reported.",
        EV,
    )
    bootstrap_samples: int = setting(
        10000, "Paired-bootstrap resamples of every confidence interval.", EV + RE + EL, ge=100
    )
    llm_max_examples: int = setting(
        40, "RAFT test prompts that the base and the adapter answer in reports/{corpus}-llm.", EL, ge=1
    )
    llm_max_new_tokens: int = setting(
        128, "Greedy decoding length of each answer (the RAFT answers average ~80 tokens).", EL, ge=8
    )
    llm_questions: int = setting(
        32,
        "The corpus's natural questions (its `questions:` file, in file order) that the base and the "
        "adapter also answer in reports/{corpus}-llm, each with the chunks ragd's hybrid search "
        "returns for it from the base embedding model's index (0 = none).",
        EL,
        ge=0,
    )
    llm_context_chunks: int = setting(
        4,
        "Chunks of ragd's hybrid search put in the context of each natural question (ragd's chat "
        "fetches up to chat.search_limit=15 and trims them to the model's context window; 4 keeps "
        "the prompt as long as the RAFT prompts the adapter was trained on).",
        EL,
        ge=1,
        le=15,
    )
    llm_batch_size: int = setting(
        8, "Prompts answered together (left-padded greedy decoding; no effect on the answers' text "
        "beyond floating-point noise).", EL, ge=1,
    )  # fmt: skip
    llm_judge: bool = setting(
        True,
        "Use the ollama model as a judge when it is reachable (RAGAS LLM metrics, chat answers graded "
        "1-5); reported as skipped otherwise.",
        EV + EL,
    )
    ragas_llm_queries: int = setting(
        20,
        "Test queries that get RAGAS's LLM-judged metrics in reports/{corpus}-embeddings (about 10 "
        "LLM calls each per model; 0 turns them off).",
        EV,
        ge=0,
    )
    ragas_llm_minutes: float = setting(
        10,
        "Time budget of those metrics: after the query that outlasts it they stop, both models scored "
        "on the same queries, and the report says so (0 = no limit). A 1.5B model on 2 CPU threads "
        "needs minutes a query.",
        EV,
        ge=0,
    )


class EncodingSettings(Section):
    """How texts are encoded by mining, the teacher, the held-out model choice and the reports."""

    precision: Literal["auto", "fp32", "bf16"] = setting(
        "auto",
        "Encoding arithmetic: bf16 autocast or fp32. auto = bf16 on a CPU with native bf16 "
        "(AVX512-BF16 or AMX) or a CUDA GPU that supports it, else fp32. Vectors of different "
        "precision never mix: the embedding cache keys on it; stats and reports record it.",
        (
            "build_training_data",
            "train_embeddings",
            "evaluate_embeddings",
            "evaluate_reranker",
            "evaluate_llm",
        ),
    )


class OllamaSettings(Section):
    """The Ollama server that writes queries and answers and judges (when one is reachable)."""

    host: str = setting(
        None,
        "Ollama server; unset = ragd's llm.base_url (ragd's default http://localhost:11434).",
        LLM_RULES,
    )
    model: str = setting(
        None, "Ollama model; unset = ragd's llm.model (ragd's default llama3.2:3b).", LLM_RULES
    )
    temperature: float = setting(0.7, "Sampling temperature.", LLM_RULES, ge=0)
    timeout: float = setting(120, "Seconds to wait for one answer.", LLM_RULES, gt=0)
    retries: int = setting(3, "Retries of a failed call.", LLM_RULES, ge=0)
    backoff: float = setting(2.0, "Seconds before the first retry (doubling after).", LLM_RULES, ge=0)


# ------------------------------------------------------------------------------------- the root


class Settings(Section):
    """ragd-train workflow configuration."""

    seed: int = setting(
        SEED_DEFAULT,
        "Seed for every random choice (generation, mining, split, training).",
        RULES,
        flags={"reranker": "seed"},
        ge=0,
        le=2**32 - 1,  # what numpy and torch take
        strict=True,  # 1e23 is not a seed
    )
    corpora: Annotated[dict[CorpusName, Corpus], Field(min_length=1)] = Field(
        description="Corpora by name; each becomes snapshots/{name}.jsonl.",
        json_schema_extra={"readers": [WORKFLOW]},
    )
    generate: GenerateSettings = GenerateSettings()
    mining: MiningSettings = MiningSettings()
    embeddings: EmbeddingsSettings = EmbeddingsSettings()
    reranker: RerankerSettings = RerankerSettings()
    raft: RaftSettings = RaftSettings()
    llm: LlmSettings = LlmSettings()
    evaluation: EvaluationSettings = EvaluationSettings()
    encoding: EncodingSettings = EncodingSettings()
    ollama: OllamaSettings = OllamaSettings()


SECTIONS: dict[str, type[Section]] = {
    name: field.annotation  # type: ignore[misc]
    for name, field in Settings.model_fields.items()
    if isinstance(field.annotation, type) and issubclass(field.annotation, Section)
}


def _extra(field: Any) -> dict[str, Any]:
    return field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}


def all_settings() -> dict[str, Any]:
    """Every setting by dotted name (``seed``, ``embeddings.epochs``, ...): its pydantic field."""
    out: dict[str, Any] = {"seed": Settings.model_fields["seed"]}
    for section, model in SECTIONS.items():
        for name, field in model.model_fields.items():
            out[f"{section}.{name}"] = field
    return out


def readers(dotted: str) -> tuple[str, ...]:
    """The rules that read a setting (``workflow``: read while the Snakefile is parsed)."""
    if dotted == "corpora":
        return (WORKFLOW,)
    return tuple(_extra(all_settings()[dotted])["readers"])


def deprecated_names() -> dict[str, str]:
    """Old dotted name -> new dotted name, for the names read for one more release."""
    return {_extra(f)["old"]: name for name, f in all_settings().items() if _extra(f).get("old")}


# ------------------------------------------------------------------------- rules and their part


def ollama_keys(rule: str, config: Mapping[str, Any]) -> tuple[str, ...]:
    """The ``ollama`` settings a rule reads: none where the config keeps it from calling an LLM."""
    generate, evaluation = config.get("generate", {}), config.get("evaluation", {})
    generator = generate.get("query_generator")
    every = tuple(OllamaSettings.model_fields)
    if rule == "generate_queries":
        return () if generator == "nollm" else ("temperature",) if generator == "local" else every
    if rule == "build_training_data":  # the LLM judge of the quality filter
        return every if generate.get("quality_filter") and generator != "nollm" else ()
    if rule == "build_raft":
        return () if config.get("raft", {}).get("answers") == "extractive" else every
    if rule in ("evaluate_embeddings", "evaluate_llm"):  # RAGAS's LLM metrics / the answer judge
        return every if evaluation.get("llm_judge", True) else ()
    return ()


def rule_keys(rule: str) -> dict[str, tuple[str, ...]]:
    """``{section: the settings of it that rule reads}`` (``ollama`` aside: see ollama_keys)."""
    if rule not in RULES:
        raise KeyError(f"no settings are declared for rule {rule!r} (ragd_train/settings.py)")
    out: dict[str, tuple[str, ...]] = {}
    for section, model in SECTIONS.items():
        if section == "ollama":
            continue
        keys = tuple(n for n, f in model.model_fields.items() if rule in _extra(f)["readers"])
        if keys:
            out[section] = keys
    return out


def rule_settings(config: Mapping[str, Any], rule: str) -> dict[str, Any]:
    """The part of the validated ``config`` that ``rule`` reads, in the config's own shape."""
    sections = rule_keys(rule)
    ollama = ollama_keys(rule, config)
    if ollama:
        sections["ollama"] = ollama
    out: dict[str, Any] = {"seed": config["seed"]}
    for name, keys in sections.items():
        section = config[name]
        out[name] = {k: section[k] for k in keys if k in section}
    return out


# ------------------------------------------------------------------------- deprecated names


_REPORTED: set[str] = set()


def migrate(config: dict[str, Any], where: Any = None, quiet: bool = False) -> dict[str, str]:
    """Move settings under their old names (``training.training_epochs``) to the new ones
    (``llm.epochs``) in place; one line on stderr each (once per process). ``where(keys)`` names
    the file and line. A setting given under both names with different values is an error.
    Returns ``{old name: new name}`` of what moved."""
    from ragd_train.errors import InputError

    training = config.get("training")
    if not isinstance(training, dict):
        return {}
    moved: dict[str, str] = {}
    renames = deprecated_names()
    for key in list(training):
        old = f"training.{key}"
        if old not in renames:
            path, line = where(["training", key]) if where else ("config", None)
            raise InputError(
                f"'{key}' was unexpected: no setting had that name (training: is deprecated; every "
                "setting and its old name: docs/settings.md)",
                path=path,
                line=line,
                field=old,
            )
        new_section, new_key = renames[old].split(".")
        target = config.setdefault(new_section, {})
        if not isinstance(target, dict):
            continue
        path, line = where(["training", key]) if where else ("config", None)
        value = training.pop(key)
        if new_key in target and target[new_key] != value:
            raise InputError(
                f"set as {old} (deprecated) and as {renames[old]}; keep only {renames[old]}",
                path=path,
                line=line,
                field=old,
            )
        target[new_key] = value
        moved[old] = renames[old]
        if not quiet and old not in _REPORTED:
            _REPORTED.add(old)
            place = f"{path}" + (f":{line}" if line else "")
            print(
                f"ragd-train: {place}: {old} is deprecated, use {renames[old]} (the old name is read "
                "until the next release)",
                file=sys.stderr,
            )
    if not training:
        del config["training"]
    return moved


# ----------------------------------------------------------------------------------- the CLI


def flags_of(command: str) -> dict[str, tuple[str, Any]]:
    """``{flag name: (dotted setting, field)}`` of a ``ragd train`` command, in declaration order."""
    out = {}
    for dotted, field in all_settings().items():
        flag = _extra(field)["flags"].get(command)
        if flag:
            out[flag] = (dotted, field)
    return out


def commands() -> tuple[str, ...]:
    return tuple(sorted({c for f in all_settings().values() for c in _extra(f)["flags"]}))


def flag_help(field: Any) -> str:
    """A flag's help: the setting's first sentence and its default."""
    text = field.description or ""
    first = text.split(". ")[0].rstrip(".")
    default = field.default
    shown = (
        "none" if default is None else ",".join(map(str, default)) if isinstance(default, list) else default
    )
    return f"{first} [config: {shown}]."


# ------------------------------------------------------------------------ the generated schema


def _inline(node: Any, defs: dict[str, Any]) -> Any:
    if isinstance(node, dict):
        if "$ref" in node:
            target = copy.deepcopy(defs[node["$ref"].split("/")[-1]])
            rest = {k: v for k, v in node.items() if k != "$ref"}
            return _inline({**target, **rest}, defs)
        return {k: _inline(v, defs) for k, v in node.items() if k not in ("title", "$defs")}
    if isinstance(node, list):
        return [_inline(v, defs) for v in node]
    return node


def _tidy(node: Any) -> Any:
    """Drop ragd-train's own field metadata, and a null default where the type has no null."""
    if isinstance(node, list):
        return [_tidy(v) for v in node]
    if not isinstance(node, dict):
        return node
    out = {k: _tidy(v) for k, v in node.items() if k not in ("readers", "flags", "old")}
    allows_null = out.get("type") == "null" or any(
        isinstance(b, dict) and b.get("type") == "null" for b in out.get("anyOf", [])
    )
    if "default" in out and out["default"] is None and not allows_null:
        del out["default"]
    if "properties" in out and out.get("type") == "object":
        for prop in out["properties"].values():
            if isinstance(prop, dict) and prop.get("type") == "object" and "properties" in prop:
                prop["default"] = {}  # a section left out takes every default
    return out


def json_schema() -> dict[str, Any]:
    """The JSON schema of the config (draft 2020-12), as Snakemake validates it."""
    raw = Settings.model_json_schema()
    schema = _tidy(_inline(raw, raw.get("$defs", {})))
    corpora = schema["properties"]["corpora"]
    ((pattern, corpus),) = corpora.pop("patternProperties").items()
    names = {"pattern": pattern, "maxLength": CORPUS_NAME_MAX}
    corpora.update(propertyNames=names, additionalProperties=corpus)
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", **schema}


SCHEMA_HEADER = (
    "# Generated from ragd_train/settings.py by `python -m ragd_train.settings`: do not edit.\n"
    "# Every setting, its type, bounds, default and help; docs/settings.md lists who reads each.\n"
)


def schema_text() -> str:
    import yaml

    return SCHEMA_HEADER + yaml.safe_dump(json_schema(), sort_keys=False, width=100, allow_unicode=True)


def reference_text() -> str:
    """docs/settings.md: every setting with its default, the rules that read it and its flag."""
    lines = [
        "# Settings",
        "",
        "Generated from `ragd_train/settings.py` by `python -m ragd_train.settings`: do not edit. Set",
        "them in a config file (`snakemake --configfile mine.yaml`, `ragd train ... --configfile`),",
        "or, for the ones with a flag, on the `ragd train` command line. Changing a setting reruns",
        "exactly the rules that read it.",
        "",
    ]
    renames = {new: old for old, new in deprecated_names().items()}
    for name, model in [("", Settings), *SECTIONS.items()]:
        title = f"## `{name}`" if name else "## top level"
        lines += [title, "", (model.__doc__ or "").strip().splitlines()[0] if name else "", ""]
        lines += ["| setting | default | read by | flag | what |", "| --- | --- | --- | --- | --- |"]
        for key, field in model.model_fields.items():
            if not name and key in SECTIONS:
                continue
            dotted = f"{name}.{key}" if name else key
            extra = _extra(field)
            default = "(required)" if field.is_required() else f"`{json.dumps(field.default)}`"
            flags = ", ".join(
                f"`ragd train {c} --{f.replace('_', '-')}`" for c, f in extra.get("flags", {}).items()
            )
            what = field.description or ""
            if dotted in renames:
                what += f" (was `{renames[dotted]}`)"
            read_by = ", ".join(extra.get("readers", [])) or "-"
            lines.append(f"| `{dotted}` | {default} | {read_by} | {flags or '-'} | {what} |")
        lines.append("")
    return "\n".join(lines).replace("\n\n\n", "\n\n")


def main() -> None:
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    (root / "config" / "schema.yaml").write_text(schema_text(), encoding="utf-8")
    (root / "docs" / "settings.md").write_text(reference_text(), encoding="utf-8")
    print("wrote config/schema.yaml and docs/settings.md")


if __name__ == "__main__":
    main()


def bind(cls: type[Section], settings: Mapping[str, Any]) -> Any:
    """A trainer's config (``cls``: its section's model plus ``seed``) from a config or a rule's part."""
    from pydantic import ValidationError

    from ragd_train.errors import InputError

    name = cls.SECTION  # type: ignore[attr-defined]
    values = {**dict(settings.get(name) or {}), "seed": settings.get("seed", SEED_DEFAULT)}
    try:
        return cls.model_validate(values)
    except ValidationError as exc:
        error = exc.errors()[0]
        where = ".".join(str(p) for p in error["loc"])
        field = where if where == "seed" else f"{name}.{where}"
        raise InputError(f"invalid value: {error['msg']}", path="config", field=field) from None
