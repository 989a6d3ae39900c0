"""Transform stage `summary`: called once, with each input stage's output as a pyarrow
Table in `ctx.inputs`."""

from collections import Counter


def count(ctx):
    topics = ctx.inputs["questions"].column("topic").to_pylist()
    return [{"topic": topic, "questions": n} for topic, n in sorted(Counter(topics).items())]
