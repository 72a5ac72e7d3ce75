"""Answer quality of a RAFT LoRA adapter against its base model.

Two sets, both answered by the base and by base + adapter with ragd's own system prompt and
context layout, greedy decoding:

* the held-out RAFT test prompts (documents of the test split, never trained on), scored
  offline against the example itself (below);
* the corpus's natural questions (its ``questions:`` file), each with the chunks ragd's hybrid
  search returns for it from the base embedding model's index, as a ragd user gets them. They
  have no reference answer: an answer is ``grounded`` when it passes the RAFT checks and cites a
  source of a document that answers the question, or, when search found none, abstains.

RAFT test metrics:

* ``exact_match``: the ``<ANSWER>:`` line equals the reference's (case, punctuation and ``[n]``
  citations aside); for an example whose oracle was removed the reference is ragd's
  "I don't have information" sentence, so abstaining correctly counts;
* ``f1``: token F1 of the two answer lines (SQuAD-style), partial credit;
* ``grounded``: the answer passes the RAFT checks (every ``##begin_quote##`` span verbatim in the
  context, citations name real sources, an answer line) and cites the oracle's source, or, without
  the oracle, abstains;
* ``cites_oracle`` (examples with the oracle): a citation names the oracle's source, whatever
  the format: ragd's prompt asks every model for ``[n]`` citations, so the base can earn it;
* ``abstention`` (examples without the oracle): the answer says the information is not there;
* ``llm_judge`` (only when an LLM is reachable): a 1-5 correctness score against the reference,
  from the configured Ollama model, cached by content.

Differences (adapter - base) get paired-bootstrap 95% CIs and a sign-flip p-value.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import re
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ragd_train.cache import CachedLLM
from ragd_train.chat.verdict import VERDICT_SCHEMA, is_verdict, parse_verdict
from ragd_train.errors import RagdTrainError
from ragd_train.evaluate.report import conclude, write
from ragd_train.jsonl_io import read_jsonl
from ragd_train.llm.raft import ANSWER_PREFIX, QUOTE, from_display, verify_answer
from ragd_train.metadata import read_metadata
from ragd_train.ragd.prompts import CITATION, NO_INFORMATION
from ragd_train.stats import paired_bootstrap, sign_flip_test

log = logging.getLogger("ragd_train")

METRICS = ("exact_match", "f1", "grounded", "cites_oracle", "abstention")
QUESTION_METRICS = ("grounded", "cites_relevant", "abstention")
HEADLINE = "f1"
SIGNIFICANCE = 0.05  # the sign-flip p-value the headline gain must also beat
JUDGE_PROMPT_VERSION = "answer-judge-v1"
JUDGE_PROMPT = """Grade the assistant's answer to a question against the reference answer,
from 1 (wrong or unsupported) to 5 (says the same as the reference). If the reference says the
information is not available, an answer that says so scores 5 and any other answer scores 1.
Answer with JSON only: {{"score": <1-5>, "reason": "<few words>"}}

Question: {question}

Reference answer: {reference}

Assistant's answer: {answer}"""

Messages = list[dict[str, str]]
Generate = Callable[[list[Messages]], list[str]]  # prompts -> greedy answers, in order


# ---------------------------------------------------------------- scoring


def answer_line(text: str) -> str | None:
    """The answer line: after the last ``<ANSWER>:``, or a displayed answer's last line; None if none."""
    text = from_display(text)
    if ANSWER_PREFIX not in text:
        return None
    tail = text.rsplit(ANSWER_PREFIX, 1)[1].strip()
    return tail.splitlines()[0].strip() if tail else ""


def normalize(text: str) -> str:
    """Lower case, no ``[n]`` citations, punctuation or extra spaces."""
    text = CITATION.sub(" ", text.lower())
    return " ".join(re.sub(r"[^\w\s]", " ", text).split())


def token_f1(prediction: str, reference: str) -> float:
    pred, ref = normalize(prediction).split(), normalize(reference).split()
    if not pred or not ref:
        return float(pred == ref)
    common = sum((Counter(pred) & Counter(ref)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(pred), common / len(ref)
    return 2 * precision * recall / (precision + recall)


def _cited(text: str) -> set[int]:
    return {int(n) for group in CITATION.findall(QUOTE.sub(" ", text)) for n in group.split(";")}


def _abstains(answer: str) -> bool:
    return normalize(NO_INFORMATION) in normalize(answer_line(answer) or from_display(answer))


def score_answer(answer: str, example: dict[str, Any]) -> dict[str, float]:
    """The offline metrics of one answer to one RAFT example (see the module docstring):
    ``cites_oracle`` where the example keeps its oracle, ``abstention`` where it does not."""
    reference = answer_line(example["messages"][-1]["content"]) or ""
    predicted = answer_line(answer) or ""
    context = example["messages"][1]["content"]
    n_sources = len({s["citation"] for s in example.get("sources", [])}) or 1
    present = bool(example.get("oracle_present", True))
    answer = from_display(answer)
    valid = verify_answer(answer, context, n_sources, needs_quote=present) is None
    scores = {
        "exact_match": float(bool(predicted) and normalize(predicted) == normalize(reference)),
        "f1": token_f1(predicted, reference),
    }
    if present:
        on_target = example.get("oracle_citation") in _cited(answer)
        scores |= {"grounded": float(valid and on_target), "cites_oracle": float(on_target)}
    else:
        abstained = _abstains(answer)
        scores |= {"grounded": float(valid and abstained), "abstention": float(abstained)}
    return scores


def score_question_answer(answer: str, item: dict[str, Any]) -> dict[str, float]:
    """An answer to a natural question with ragd's search results as its context: ``grounded``
    (passes the RAFT checks and cites a source of an answering document, or abstains when search
    found none), ``cites_relevant`` or ``abstention`` (whichever applies)."""
    context = item["messages"][1]["content"]
    relevant = set(item["relevant_citations"])
    answer = from_display(answer)
    valid = verify_answer(answer, context, item["n_sources"], needs_quote=bool(relevant)) is None
    if relevant:
        hit = bool(relevant & _cited(answer))
        return {"grounded": float(valid and hit), "cites_relevant": float(hit)}
    abstained = _abstains(answer)
    return {"grounded": float(valid and abstained), "abstention": float(abstained)}


# ---------------------------------------------------------------- generation


def _batches(items: list[Any], size: int) -> list[list[Any]]:
    return [items[i : i + size] for i in range(0, len(items), max(1, size))]


def _peft_generators(
    weights: Path | str, adapter_dir: Path, max_new_tokens: int, precision: str, batch_size: int
) -> tuple[Generate, Generate]:
    import torch

    from ragd_train.llm.torch_lora import load_adapter, load_base

    model, tokenizer = load_base(weights)
    model = load_adapter(model, adapter_dir)
    tokenizer.padding_side = "left"  # the answers start where every prompt ends
    dtype = torch.bfloat16 if precision == "bf16" else None
    merged = [False]

    def run(prompts: list[Messages], adapter: bool) -> list[str]:
        from ragd_train.progress import track

        # the adapter's answers with its weights merged in (no extra matmuls a layer); the base's
        # with them taken out again and the adapter switched off
        if adapter and not merged[0]:
            model.merge_adapter()
        elif not adapter and merged[0]:
            model.unmerge_adapter()
        merged[0] = adapter
        answers = []
        label = f"answering, {'adapter' if adapter else 'base'} ({batch_size} prompts a batch)"
        for batch in track(_batches(prompts, batch_size), label):
            texts = [
                tokenizer.apply_chat_template(m, add_generation_prompt=True, tokenize=False) for m in batch
            ]
            enc = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
            context = contextlib.nullcontext() if adapter else model.disable_adapter()
            with (
                torch.no_grad(),
                context,
                torch.autocast("cpu", dtype=dtype or torch.float32, enabled=dtype is not None),
            ):
                out = model.generate(
                    **enc, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=tokenizer.pad_token_id
                )
            width = enc["input_ids"].shape[1]
            answers += [tokenizer.decode(row[width:], skip_special_tokens=True) for row in out]
        return answers

    return (lambda p: run(p, False)), (lambda p: run(p, True))


def _mlx_generators(weights: Path | str, adapter_dir: Path, max_new_tokens: int) -> tuple[Generate, Generate]:
    from mlx_lm import generate

    from ragd_train.llm.mlx_backend import as_mlx_dir, load_with_adapter

    model_dir = as_mlx_dir(weights)
    pairs = {False: load_with_adapter(model_dir, None), True: load_with_adapter(model_dir, adapter_dir)}

    def run(prompts: list[Messages], adapter: bool) -> list[str]:
        model, tokenizer = pairs[adapter]
        return [
            generate(
                model,
                tokenizer,
                prompt=tokenizer.apply_chat_template(m, add_generation_prompt=True),
                max_tokens=max_new_tokens,
            )  # greedy by default
            for m in prompts
        ]

    return (lambda p: run(p, False)), (lambda p: run(p, True))


def load_generators(
    model_dir: str | Path, max_new_tokens: int, *, precision: str = "auto", batch_size: int = 8
) -> tuple[Generate, Generate, dict[str, Any]]:
    """Greedy answer functions for the base and for base + adapter, with the backend that trained
    it; the peft backend's answers run in ``precision`` (``llm.precision``), ``batch_size`` at a time."""
    from ragd_train.llm.base_models import resolve_weights
    from ragd_train.precision import resolve_precision

    model_dir = Path(model_dir)
    meta = read_metadata(model_dir, need=("backend", "base_model")).model_dump()
    backend, base = meta["backend"], meta["base_model"]
    if backend == "unsloth":
        raise RagdTrainError(
            f"{model_dir}: an Unsloth adapter (4-bit base) is evaluated on a CUDA GPU; run this rule there "
            "(profiles/slurm) or train with llm.backend: peft"
        )
    weights = resolve_weights(base, backend)
    if backend == "mlx":
        base_fn, adapter_fn = _mlx_generators(weights, model_dir, max_new_tokens)
        meta["answer_precision"] = "mlx"
    else:
        chosen = resolve_precision(precision, "cpu")
        base_fn, adapter_fn = _peft_generators(weights, model_dir, max_new_tokens, chosen, batch_size)
        meta["answer_precision"] = chosen
    return base_fn, adapter_fn, meta


# ---------------------------------------------------------------- judge


class AnswerJudge(CachedLLM):
    """Grades answers 1-5 against the reference with an LLM; verdicts are cached by content."""

    def __init__(self, llm: Any, cache: Any, *, seed: int) -> None:
        super().__init__(llm, cache, temperature=0.0, seed=seed)

    def score(self, question: str, reference: str, answer: str) -> float | None:
        """The score in 1-5, or None when the LLM's verdict cannot be read."""
        from ragd_train.cache import cache_key

        key = cache_key(
            kind="answer_judge",
            prompt=JUDGE_PROMPT_VERSION,
            question=question,
            reference=reference,
            answer=answer,
            model=self.digest,
            **self.params,
        )
        prompt = JUDGE_PROMPT.format(question=question, reference=reference, answer=answer or "(no answer)")

        def ask() -> dict[str, Any] | None:
            reply = self.llm.chat(
                [{"role": "user", "content": prompt}], json_format=VERDICT_SCHEMA, options=self.params
            )
            try:
                return {"score": parse_verdict(reply)["score"]}
            except ValueError:
                return None

        ref = hashlib.sha256(question.encode()).hexdigest()
        verdict = self.cache.fetch(key, ask, valid=is_verdict, ref=ref)
        return float(verdict["score"]) if verdict is not None else None


# ---------------------------------------------------------------- the report


def _compare(base: Any, adapter: Any, samples: int, seed: int) -> dict[str, Any]:
    b, a = np.asarray(base, dtype=np.float64), np.asarray(adapter, dtype=np.float64)
    ci = paired_bootstrap(b, a, samples=samples, seed=seed)
    return {
        "n": len(b),
        "base": float(b.mean()),
        "adapter": float(a.mean()),
        "delta": ci["delta"],
        "ci95": [ci["ci_low"], ci["ci_high"]],
        "p_value": sign_flip_test(b, a, samples=samples, seed=seed),
    }


def _compare_all(
    rows: list[dict[str, Any]], metrics: tuple[str, ...], samples: int, seed: int
) -> dict[str, Any]:
    """Each metric over the rows that have it (some apply to a subset), base vs adapter."""
    out: dict[str, Any] = {}
    for m in metrics:
        pairs = [(r["base"][m], r["adapter"][m]) for r in rows if m in r["base"]]
        if not pairs:
            out[m] = {"skipped": "no prompt it applies to"}
            continue
        b, a = zip(*pairs, strict=True)
        out[m] = _compare(b, a, samples, seed)
    return out


def _answer(fn: Generate, prompts: list[Messages], what: str) -> list[str]:
    log.info("answering %d %s", len(prompts), what)
    answers = fn(prompts)
    if len(answers) != len(prompts):
        raise RagdTrainError(f"{len(answers)} answers to {len(prompts)} prompts ({what})")
    return answers


def question_prompts(
    questions: dict[str, str],
    qrels: dict[str, dict[str, int]],
    chunks: list[dict[str, Any]],
    ranked: list[list[str]],
) -> list[dict[str, Any]]:
    """Each natural question in ragd's prompt with the chunks its search returned (in rank order)
    as the context; the citation numbers of the documents that answer it."""
    from ragd_train.llm.raft import chunk_source
    from ragd_train.ragd.prompts import format_context, system_prompt, user_message

    by_id = {c["chunk_id"]: c for c in chunks}
    items = []
    for (qid, question), found in zip(questions.items(), ranked, strict=True):
        sources = [chunk_source(by_id[c], "retrieved", "search") for c in found]
        context, numbers = format_context(sources)
        relevant = sorted({numbers[s.chunk_id] for s in sources if s.document_id in qrels[qid]})
        items.append(
            {
                "query_id": qid,
                "query": question,
                "messages": [
                    {"role": "system", "content": system_prompt()},
                    {"role": "user", "content": user_message(context, question)},
                ],
                "n_sources": len(set(numbers.values())) or 1,
                "relevant_citations": relevant,
                "retrieved": found,
            }
        )
    return items


def evaluate_adapter(
    test_path: str | Path,
    base: Generate,
    adapter: Generate,
    *,
    questions: list[dict[str, Any]] | None = None,
    judge: AnswerJudge | None = None,
    judge_note: str | None = None,
    max_examples: int = 50,
    bootstrap_samples: int = 10_000,
    seed: int = 42,
    meta: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Both models answer the first ``max_examples`` test prompts (and the ``questions`` made by
    :func:`question_prompts`); scores, CIs, the verdict and the answers."""
    examples = read_jsonl(test_path, ("messages",))[:max_examples]
    if not examples:
        raise RagdTrainError(f"{test_path}: no RAFT test examples to evaluate on")
    start = time.monotonic()
    questions = questions or []
    # every prompt of both sets in one call a side: the base's answers all come before the adapter's
    prompts = [e["messages"][:2] for e in examples] + [q["messages"] for q in questions]
    what = f"prompts ({len(examples)} RAFT test prompts, {len(questions)} natural questions)"
    both = {"base": _answer(base, prompts, f"{what} with the base")}
    both["adapter"] = _answer(adapter, prompts, f"{what} with the adapter")
    answers = {side: got[: len(examples)] for side, got in both.items()}
    q_answers = {side: got[len(examples) :] for side, got in both.items()}
    judged: dict[str, list[float | None]] = {"base": [], "adapter": []}
    rows = []
    for i, example in enumerate(examples):
        reference = answer_line(example["messages"][-1]["content"]) or ""
        row: dict[str, Any] = {
            "query_id": example.get("query_id"),
            "oracle_present": example.get("oracle_present"),
        }
        for side in ("base", "adapter"):
            answer = answers[side][i]
            if judge is not None:
                judged[side].append(
                    judge.score(example.get("query", ""), reference, answer_line(answer) or answer)
                )
            row[side] = {"answer": answer, **score_answer(answer, example)}
        rows.append(row)
    metrics = _compare_all(rows, METRICS, bootstrap_samples, seed)
    if judge is None:
        metrics["llm_judge"] = {"skipped": judge_note or "no LLM reachable"}
    else:
        pairs = [(b, a) for b, a in zip(judged["base"], judged["adapter"], strict=True) if None not in (a, b)]
        if pairs:
            b_scores, a_scores = zip(*pairs, strict=True)
            metrics["llm_judge"] = {
                **_compare(b_scores, a_scores, bootstrap_samples, seed),
                "judged": len(pairs),
                "judge": judge.name,
            }
        else:
            metrics["llm_judge"] = {"skipped": "the judge's verdicts could not be read"}
    question_part = None
    if questions:
        q_rows = [
            {
                "query_id": q["query_id"],
                "relevant_retrieved": bool(q["relevant_citations"]),
                **{
                    side: {"answer": q_answers[side][i], **score_question_answer(q_answers[side][i], q)}
                    for side in ("base", "adapter")
                },
            }
            for i, q in enumerate(questions)
        ]
        question_part = {
            "count": len(questions),
            "relevant_retrieved": sum(r["relevant_retrieved"] for r in q_rows),
            "metrics": _compare_all(q_rows, QUESTION_METRICS, bootstrap_samples, seed),
            "answers": q_rows,
        }
    head = metrics[HEADLINE]
    report = {
        "kind": "llm",
        "test_data": str(test_path),
        "examples": len(examples),
        "oracle_absent": sum(not e.get("oracle_present", True) for e in examples),
        "backend": (meta or {}).get("backend"),
        "base_model": (meta or {}).get("base_model"),
        "answer_precision": (meta or {}).get("answer_precision"),
        "metrics": metrics,
        "questions": question_part,
        "headline": {
            "metric": f"answer_{HEADLINE}",
            "base": head["base"],
            "finetuned": head["adapter"],
            "delta": head["delta"],
            "ci_low": head["ci95"][0],
            "ci_high": head["ci95"][1],
            "p_value": head["p_value"],
        },
        "wall_time_s": round(time.monotonic() - start, 2),
        "answers": rows,
    }
    report["losses"] = significant_losses(report)
    # both tests must agree: with few prompts a percentile-bootstrap CI is too narrow on its own
    improved = head["ci95"][0] > 0 and head["p_value"] < SIGNIFICANCE and not report["losses"]
    return conclude(report, "llm", improved, llm_message(report, improved))


def significant_losses(report: dict[str, Any]) -> list[str]:
    """Every measure on which the adapter is significantly worse (95% CI below zero)."""
    sets = [("RAFT test", report["metrics"])]
    if report.get("questions"):
        sets.append(("natural questions", report["questions"]["metrics"]))
    return [
        f"{name} {metric}"
        for name, metrics in sets
        for metric, m in metrics.items()
        if "ci95" in m and m["ci95"][1] < 0
    ]


def llm_message(report: dict[str, Any], improved: bool | None = None) -> str:
    """The verdict's sentence; ``improved`` defaults to the report's own."""
    improved = bool(report.get("improved")) if improved is None else improved
    m = report["metrics"][HEADLINE]
    lo, hi = m["ci95"]
    verdict = "better than" if improved else "NOT better than"
    text = (
        f"adapter is {verdict} its base on {report['examples']} RAFT test prompts: answer F1 "
        f"{m['base']:.3f} -> {m['adapter']:.3f} ({m['delta']:+.3f}, 95% CI [{lo:+.3f}, {hi:+.3f}], "
        f"p={m['p_value']:.3g})"
    )
    if report.get("losses"):
        text += "; significantly worse on " + ", ".join(report["losses"])
    elif not improved and lo > 0:
        text += f"; the sign-flip test does not confirm it (p >= {SIGNIFICANCE:g}: too few prompts)"
    elif not improved:
        text += "; the CI does not exclude no gain"
    return text


def _metric_table(metrics: dict[str, Any]) -> list[str]:
    lines = [
        "| metric | n | base | adapter | delta | 95% CI | p |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, m in metrics.items():
        if "skipped" in m:
            lines.append(f"| {name} | | skipped: {m['skipped']} | | | | |")
            continue
        lo, hi = m["ci95"]
        lines.append(
            f"| {name} | {m.get('n', '')} | {m['base']:.3f} | {m['adapter']:.3f} | {m['delta']:+.3f} | "
            f"[{lo:+.3f}, {hi:+.3f}] | {m['p_value']:.3g} |"
        )
    return lines


def markdown_llm_report(report: dict[str, Any]) -> str:
    lines = [
        "## Chat model: base vs RAFT adapter",
        "",
        f"{report['examples']} prompts of `{report['test_data']}` ({report['oracle_absent']} without "
        f"the oracle source), greedy decoding ({report.get('answer_precision') or 'fp32'}), backend "
        f"`{report['backend']}`, base `{report['base_model']}`.",
        "",
        *_metric_table(report["metrics"]),
    ]
    q = report.get("questions")
    if q:
        lines += [
            "",
            f"### Natural questions with ragd's search results ({q['count']} questions; a document "
            f"that answers it among the sources for {q['relevant_retrieved']})",
            "",
            *_metric_table(q["metrics"]),
        ]
    lines += ["", report["summary"], ""]
    first = report["answers"][0]
    lines += [
        f"Example ({first['query_id']}):",
        "",
        "```text",
        f"base:    {answer_line(first['base']['answer']) or first['base']['answer'][:300]}",
        f"adapter: {answer_line(first['adapter']['answer']) or first['adapter']['answer'][:300]}",
        "```",
        "",
    ]
    return "\n".join(lines)


def write_llm_report(report: dict[str, Any], json_path: str | Path, md_path: str | Path) -> None:
    write(report, json_path, md_path, markdown_llm_report(report))


def natural_question_items(
    questions_path: str | Path,
    snapshot_path: str | Path,
    config: dict[str, Any],
    cache_dir: str | Path,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The first ``evaluation.llm_questions`` natural questions with ragd's hybrid search results
    from the base embedding model (the index a ragd user has before any fine-tuning)."""
    import tempfile

    from ragd_train.encoding import CachedEncoder
    from ragd_train.evaluate.embeddings import _rank, load_questions
    from ragd_train.ragd.search import HybridSearch
    from ragd_train.snapshot import load_snapshot

    evaluation = config["evaluation"]
    chunks = load_snapshot(snapshot_path)
    questions, qrels = load_questions(questions_path, chunks, strict=False)
    keep = list(questions)[: evaluation["llm_questions"]]
    questions = {q: questions[q] for q in keep}
    k = evaluation["llm_context_chunks"]
    encoder = CachedEncoder(
        config["embeddings"]["base_model"], cache_dir, precision=config["encoding"]["precision"]
    )
    doc_ids = [c["chunk_id"] for c in chunks]
    corpus = encoder.encode([c["text"] for c in chunks])
    query_emb = encoder.encode(list(questions.values()))
    dense = _rank(query_emb, corpus, doc_ids, int(corpus.shape[1]), k * HybridSearch.FETCH_MULTIPLIER)
    with tempfile.TemporaryDirectory(prefix="ragd-train-hybrid-") as tmp:
        search = HybridSearch(chunks, Path(tmp))
        ranked = search.rank(list(questions.values()), dense, k)
    items = question_prompts(questions, qrels, chunks, ranked)
    retrieval = {
        "questions": str(questions_path),
        "search": search.implementation,
        "embedding_model": config["embeddings"]["base_model"],
        "context_chunks": k,
    }
    return items, retrieval


def evaluate_llm_target(
    model_dir: str | Path,
    test_path: str | Path,
    config: dict[str, Any],
    json_path: str | Path,
    md_path: str | Path,
    *,
    questions_path: str | Path | None = None,
    snapshot_path: str | Path | None = None,
    cache_dir: str | Path = "cache",
) -> dict[str, Any]:
    """The workflow's ``reports/{corpus}-llm`` rule: generate, score, judge when Ollama answers."""
    from ragd_train.cache import GenerationCache
    from ragd_train.chat.connect import connect_judge

    evaluation = config["evaluation"]
    items, retrieval = None, None
    if questions_path and snapshot_path and evaluation["llm_questions"] > 0:
        items, retrieval = natural_question_items(questions_path, snapshot_path, config, cache_dir)
    base, adapter, meta = load_generators(
        model_dir,
        evaluation["llm_max_new_tokens"],
        precision=config["llm"]["precision"],
        batch_size=evaluation["llm_batch_size"],
    )
    llm, note = connect_judge(config)
    judge = AnswerJudge(llm, GenerationCache(cache_dir, "generations"), seed=config["seed"]) if llm else None
    report = evaluate_adapter(
        test_path,
        base,
        adapter,
        questions=items,
        judge=judge,
        judge_note=note,
        max_examples=evaluation["llm_max_examples"],
        bootstrap_samples=evaluation["bootstrap_samples"],
        seed=config["seed"],
        meta=meta,
    )
    if report["questions"]:
        report["questions"]["retrieval"] = retrieval
    report["model"] = str(model_dir)
    write_llm_report(report, json_path, md_path)
    log.info("%s", report["summary"])
    return report
