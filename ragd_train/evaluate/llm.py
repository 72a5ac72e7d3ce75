"""Answer quality of a RAFT LoRA adapter against its base model, on the held-out RAFT test split.

Both models answer every test example's prompt (ragd's system prompt and context, greedy decoding),
and each answer is scored offline against the example itself:

* ``exact_match``: the ``<ANSWER>:`` line equals the reference's (case, punctuation and ``[n]``
  citations aside); for an example whose oracle was removed the reference is ragd's
  "I don't have information" sentence, so abstaining correctly counts;
* ``f1``: token F1 of the two answer lines (SQuAD-style), partial credit;
* ``grounded``: the answer passes the RAFT checks (every ``##begin_quote##`` span verbatim in the
  context, citations name real sources, an answer line) and cites the oracle's source, or, without
  the oracle, abstains;
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

METRICS = ("exact_match", "f1", "grounded")
HEADLINE = "f1"
JUDGE_PROMPT_VERSION = "answer-judge-v1"
JUDGE_PROMPT = """Grade the assistant's answer to a question against the reference answer,
from 1 (wrong or unsupported) to 5 (says the same as the reference). If the reference says the
information is not available, an answer that says so scores 5 and any other answer scores 1.
Answer with JSON only: {{"score": <1-5>, "reason": "<few words>"}}

Question: {question}

Reference answer: {reference}

Assistant's answer: {answer}"""

Generate = Callable[[list[dict[str, str]]], str]


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


def score_answer(answer: str, example: dict[str, Any]) -> dict[str, float]:
    """The offline metrics of one answer to one RAFT example (see the module docstring)."""
    reference = answer_line(example["messages"][-1]["content"]) or ""
    predicted = answer_line(answer) or ""
    context = example["messages"][1]["content"]
    n_sources = len({s["citation"] for s in example.get("sources", [])}) or 1
    present = bool(example.get("oracle_present", True))
    answer = from_display(answer)
    valid = verify_answer(answer, context, n_sources, needs_quote=present) is None
    if present:
        on_target = example.get("oracle_citation") in _cited(answer)
    else:
        on_target = normalize(NO_INFORMATION) in normalize(predicted or answer)
    return {
        "exact_match": float(bool(predicted) and normalize(predicted) == normalize(reference)),
        "f1": token_f1(predicted, reference),
        "grounded": float(valid and on_target),
    }


# ---------------------------------------------------------------- generation


def _peft_generators(
    weights: Path | str, adapter_dir: Path, max_new_tokens: int
) -> tuple[Generate, Generate]:
    import torch

    from ragd_train.llm.torch_lora import load_adapter, load_base

    model, tokenizer = load_base(weights)
    model = load_adapter(model, adapter_dir)

    def run(messages: list[dict[str, str]], adapter: bool) -> str:
        ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt")
        if not isinstance(ids, torch.Tensor):  # a BatchEncoding in newer transformers
            ids = ids["input_ids"]
        context = contextlib.nullcontext() if adapter else model.disable_adapter()
        with torch.no_grad(), context:
            out = model.generate(
                input_ids=ids,
                attention_mask=torch.ones_like(ids),
                max_new_tokens=max_new_tokens,
                do_sample=False,
                pad_token_id=tokenizer.pad_token_id,
            )
        return tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True)

    return (lambda m: run(m, False)), (lambda m: run(m, True))


def _mlx_generators(weights: Path | str, adapter_dir: Path, max_new_tokens: int) -> tuple[Generate, Generate]:
    from mlx_lm import generate

    from ragd_train.llm.mlx_backend import as_mlx_dir, load_with_adapter

    model_dir = as_mlx_dir(weights)
    pairs = {False: load_with_adapter(model_dir, None), True: load_with_adapter(model_dir, adapter_dir)}

    def run(messages: list[dict[str, str]], adapter: bool) -> str:
        model, tokenizer = pairs[adapter]
        prompt = tokenizer.apply_chat_template(messages, add_generation_prompt=True)
        return generate(model, tokenizer, prompt=prompt, max_tokens=max_new_tokens)  # greedy by default

    return (lambda m: run(m, False)), (lambda m: run(m, True))


def load_generators(model_dir: str | Path, max_new_tokens: int) -> tuple[Generate, Generate, dict[str, Any]]:
    """Greedy answer functions for the base and for base + adapter, with the backend that trained it."""
    from ragd_train.llm.base_models import resolve_weights

    model_dir = Path(model_dir)
    meta = read_metadata(model_dir, need=("backend", "base_model")).model_dump()
    backend, base = meta["backend"], meta["base_model"]
    if backend == "unsloth":
        raise RagdTrainError(
            f"{model_dir}: an Unsloth adapter (4-bit base) is evaluated on a CUDA GPU; run this rule there "
            "(profiles/slurm) or train with llm.backend: peft"
        )
    weights = resolve_weights(base, backend)
    make = _mlx_generators if backend == "mlx" else _peft_generators
    base_fn, adapter_fn = make(weights, model_dir, max_new_tokens)
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
        "base": float(b.mean()),
        "adapter": float(a.mean()),
        "delta": ci["delta"],
        "ci95": [ci["ci_low"], ci["ci_high"]],
        "p_value": sign_flip_test(b, a, samples=samples, seed=seed),
    }


def evaluate_adapter(
    test_path: str | Path,
    base: Generate,
    adapter: Generate,
    *,
    judge: AnswerJudge | None = None,
    judge_note: str | None = None,
    max_examples: int = 50,
    bootstrap_samples: int = 10_000,
    seed: int = 42,
    meta: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Both models answer the first ``max_examples`` test prompts; scores, CIs and the answers."""
    from ragd_train.progress import track

    examples = read_jsonl(test_path, ("messages",))[:max_examples]
    if not examples:
        raise RagdTrainError(f"{test_path}: no RAFT test examples to evaluate on")
    start = time.monotonic()
    per: dict[str, dict[str, list[float]]] = {side: {m: [] for m in METRICS} for side in ("base", "adapter")}
    judged: dict[str, list[float | None]] = {"base": [], "adapter": []}
    rows = []
    for example in track(examples, "answering RAFT test prompts (base, adapter)"):
        prompt = example["messages"][:2]
        reference = answer_line(example["messages"][-1]["content"]) or ""
        row: dict[str, Any] = {
            "query_id": example.get("query_id"),
            "oracle_present": example.get("oracle_present"),
        }
        for side, fn in (("base", base), ("adapter", adapter)):
            answer = fn(prompt)
            scores = score_answer(answer, example)
            for m in METRICS:
                per[side][m].append(scores[m])
            if judge is not None:
                judged[side].append(
                    judge.score(example.get("query", ""), reference, answer_line(answer) or answer)
                )
            row[side] = {"answer": answer, **scores}
        rows.append(row)
    metrics: dict[str, Any] = {
        m: _compare(per["base"][m], per["adapter"][m], bootstrap_samples, seed) for m in METRICS
    }
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
    delta = metrics[HEADLINE]["delta"]
    report = {
        "kind": "llm",
        "test_data": str(test_path),
        "examples": len(examples),
        "oracle_absent": sum(not e.get("oracle_present", True) for e in examples),
        "backend": (meta or {}).get("backend"),
        "base_model": (meta or {}).get("base_model"),
        "metrics": metrics,
        "headline": {
            "metric": f"answer_{HEADLINE}",
            "base": metrics[HEADLINE]["base"],
            "finetuned": metrics[HEADLINE]["adapter"],
            "delta": delta,
            "ci_low": metrics[HEADLINE]["ci95"][0],
            "ci_high": metrics[HEADLINE]["ci95"][1],
            "p_value": metrics[HEADLINE]["p_value"],
        },
        "improved": bool(delta > 0),
        "wall_time_s": round(time.monotonic() - start, 2),
        "answers": rows,
    }
    return conclude(report, "llm", delta > 0, llm_message(report))


def llm_message(report: dict[str, Any]) -> str:
    m = report["metrics"][HEADLINE]
    lo, hi = m["ci95"]
    verdict = "better than" if report["improved"] else "NOT better than"
    return (
        f"adapter is {verdict} its base on {report['examples']} RAFT test prompts: answer F1 "
        f"{m['base']:.3f} -> {m['adapter']:.3f} ({m['delta']:+.3f}, 95% CI [{lo:+.3f}, {hi:+.3f}], "
        f"p={m['p_value']:.3g})"
    )


def markdown_llm_report(report: dict[str, Any]) -> str:
    lines = [
        "## Chat model: base vs RAFT adapter",
        "",
        f"{report['examples']} prompts of `{report['test_data']}` ({report['oracle_absent']} without "
        f"the oracle source), greedy decoding, backend `{report['backend']}`, base `{report['base_model']}`.",
        "",
        "| metric | base | adapter | delta | 95% CI | p |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for name, m in report["metrics"].items():
        if "skipped" in m:
            lines.append(f"| {name} | skipped: {m['skipped']} | | | | |")
            continue
        lo, hi = m["ci95"]
        lines.append(
            f"| {name} | {m['base']:.3f} | {m['adapter']:.3f} | {m['delta']:+.3f} | "
            f"[{lo:+.3f}, {hi:+.3f}] | {m['p_value']:.3g} |"
        )
    lines += ["", llm_message(report), ""]
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


def evaluate_llm_target(
    model_dir: str | Path,
    test_path: str | Path,
    config: dict[str, Any],
    json_path: str | Path,
    md_path: str | Path,
    *,
    cache_dir: str | Path = "cache",
) -> dict[str, Any]:
    """The workflow's ``reports/{corpus}-llm`` rule: generate, score, judge when Ollama answers."""
    from ragd_train.cache import GenerationCache
    from ragd_train.chat.connect import connect_judge

    evaluation = config["evaluation"]
    base, adapter, meta = load_generators(model_dir, evaluation["llm_max_new_tokens"])
    llm, note = connect_judge(config)
    judge = AnswerJudge(llm, GenerationCache(cache_dir, "generations"), seed=config["seed"]) if llm else None
    report = evaluate_adapter(
        test_path,
        base,
        adapter,
        judge=judge,
        judge_note=note,
        max_examples=evaluation["llm_max_examples"],
        bootstrap_samples=evaluation["bootstrap_samples"],
        seed=config["seed"],
        meta=meta,
    )
    report["model"] = str(model_dir)
    write_llm_report(report, json_path, md_path)
    log.info("%s", report["summary"])
    return report
