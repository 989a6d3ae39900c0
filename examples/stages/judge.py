"""Generate stage: judge each conversation (seeded from conversations).

Reads the judge prompt from ``ctx.inputs["examples/prompts/judge.txt"]``.
Keeps every conversation column and adds score, passed, prompt_chars
(the length of the filled-in judge prompt).
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa

PROMPT_INPUT = "examples/prompts/judge.txt"


def _score(rng, text: str) -> float:
    # Deterministic stand-in for a model's judgement in [0.25, 0.95]: noise
    # from ctx.rng plus a small bonus for longer conversations.
    length_bonus = min(len(text) / 2000.0, 0.2)
    return round(0.25 + 0.5 * rng.random() + length_bonus, 3)


def judge(ctx) -> pa.Table:
    """Score ``ctx.seed_rows``; ``passed`` is score >= params.threshold."""
    threshold = float((ctx.params or {}).get("threshold", 0.5))
    prompt_template = Path(ctx.inputs[PROMPT_INPUT]).read_text(encoding="utf-8")
    if ctx.seed_rows is None:
        raise ValueError(f"stage {ctx.stage_name!r} needs a seed of conversations")

    seed = ctx.seed_rows
    scores, prompt_chars = [], []
    for text in seed.column("text").to_pylist():
        prompt = prompt_template.replace("{conversation}", text or "")
        # A real pipeline calls its model here, e.g.
        #   answer = client.chat(model=..., messages=[{"role": "user", "content": prompt}])
        #   score = json.loads(answer)["score"]
        # This example derives a score from ctx.rng and the text length instead.
        scores.append(_score(ctx.rng, text or ""))
        prompt_chars.append(len(prompt))

    return (
        seed.append_column("score", pa.array(scores, type=pa.float64()))
        .append_column(
            "passed", pa.array([s >= threshold for s in scores], type=pa.bool_())
        )
        .append_column("prompt_chars", pa.array(prompt_chars, type=pa.int64()))
    )
