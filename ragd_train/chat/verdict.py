"""What the LLM judges answer: a 1-5 score and a few words, by Ollama's structured outputs.

The schema makes the answer that object by construction; the parser still refuses anything else
(``true``, ``4.9``, a second object, prose), so a judged text cannot pass for a verdict.
"""

from __future__ import annotations

import json
from typing import Any

VERDICT_SCHEMA = {
    "type": "object",
    "properties": {
        "score": {"type": "integer", "minimum": 1, "maximum": 5},
        "reason": {"type": "string", "maxLength": 120},  # a few words: a verdict costs its tokens
    },
    "required": ["score", "reason"],
}


def parse_verdict(answer: str) -> dict[str, Any]:
    """The verdict from a judge's whole answer: exactly one JSON object with an integer ``score``
    from 1 to 5 (``true``, ``4.9`` or a second object are refused with ValueError)."""
    stripped = answer.strip()
    if stripped.startswith("```"):
        stripped = stripped.strip("`").removeprefix("json").strip()
    try:
        value = json.loads(stripped)
    except json.JSONDecodeError as exc:
        raise ValueError(f"not one JSON object ({exc.msg})") from None
    if not isinstance(value, dict) or set(value) - {"score", "reason"}:
        raise ValueError("expected {score, reason}")
    score = value.get("score")
    if isinstance(score, float) and score.is_integer():
        score = int(score)
    if not isinstance(score, int) or isinstance(score, bool) or not 1 <= score <= 5:
        raise ValueError(f"score {score!r} is not an integer from 1 to 5")
    return {"score": score, "reason": str(value.get("reason", ""))[:200]}


def is_verdict(value: Any) -> bool:
    """A cached verdict as :func:`parse_verdict` returns it."""
    score = value.get("score") if isinstance(value, dict) else None
    return isinstance(score, int) and not isinstance(score, bool) and 1 <= score <= 5
