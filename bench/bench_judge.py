"""The LLM judge with a real model: time per verdict and score agreement, with and without the
``maxLength`` cap on the verdict's ``reason`` in ``VERDICT_SCHEMA``.

The judge (``ragd_train.generate.llm.LLMJudge``, through the real ``ollama`` client) rates the
demo's hand-written questions against the start of a document that answers them and of one that
does not. The model is Qwen2.5-Coder-1.5B-Instruct on the CPU behind the Ollama-protocol server
(``bench/gguf_llm.py``). Both schemas judge the same pairs, alternating which goes first.

    python bench/bench_judge.py --pairs 12
"""

from __future__ import annotations

import argparse
import copy
import json
import random
import tempfile
import time
from pathlib import Path

from common import REPO


def pairs(n: int, seed: int) -> list[tuple[str, str, bool]]:
    """(question, passage, relevant): half with an answering document, half with another one."""
    docs = {
        p.stem: p.read_text(encoding="utf-8")[:800] for p in sorted((REPO / "data" / "demo").glob("*.md"))
    }
    questions = [
        json.loads(line) for line in (REPO / "data" / "demo-questions.jsonl").read_text().splitlines()
    ]
    rng = random.Random(seed)
    chosen = rng.sample(questions, n)
    out = []
    for i, q in enumerate(chosen):
        if i % 2 == 0:
            out.append((q["query"], docs[q["documents"][0]], True))
        else:
            other = rng.choice([d for d in docs if d not in q["documents"]])
            out.append((q["query"], docs[other], False))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--pairs", type=int, default=12)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    from gguf_llm import QWEN_NAME, gguf_ollama_server

    from ragd_train.cache import GenerationCache
    from ragd_train.chat.ollama import OllamaLLM
    from ragd_train.generate import llm as judge_module

    capped = judge_module.VERDICT_SCHEMA
    uncapped = copy.deepcopy(capped)
    uncapped["properties"]["reason"].pop("maxLength", None)
    work = pairs(args.pairs, args.seed)
    results: dict[str, dict] = {"uncapped": {"s": [], "scores": []}, "capped": {"s": [], "scores": []}}
    with gguf_ollama_server() as srv, tempfile.TemporaryDirectory() as tmp:
        client = OllamaLLM(host=srv.url, model=QWEN_NAME, temperature=0.0, retries=1)
        for i, (query, text, _) in enumerate(work):
            order = ("uncapped", "capped") if i % 2 == 0 else ("capped", "uncapped")
            for name in order:
                judge_module.VERDICT_SCHEMA = capped if name == "capped" else uncapped
                cache = GenerationCache(Path(tmp) / name / str(i), "judge")  # fresh: each verdict is made
                judge = judge_module.LLMJudge(client, cache, min_score=3, seed=args.seed)
                t = time.perf_counter()
                verdict = judge.judge(query, text)
                results[name]["s"].append(time.perf_counter() - t)
                results[name]["scores"].append(verdict["score"])
        judge_module.VERDICT_SCHEMA = capped
    relevant = [rel for _, _, rel in work]
    print(f"{len(work)} (question, passage) pairs from the demo, {QWEN_NAME} on 2 CPU threads")
    print(f"{'reason':<10}{'s/verdict':>10}{'kept relevant':>15}{'kept other':>12}")
    for name, res in results.items():
        kept = [s is not None and s >= 3 for s in res["scores"]]
        rel_kept = sum(k for k, r in zip(kept, relevant, strict=True) if r)
        other_kept = sum(k for k, r in zip(kept, relevant, strict=True) if not r)
        print(
            f"{name:<10}{sum(res['s']) / len(res['s']):>10.2f}"
            f"{f'{rel_kept}/{sum(relevant)}':>15}{f'{other_kept}/{len(relevant) - sum(relevant)}':>12}"
        )
    same = sum(
        a == b for a, b in zip(results["capped"]["scores"], results["uncapped"]["scores"], strict=True)
    )
    print(f"same score from both: {same}/{len(work)}")


if __name__ == "__main__":
    main()
