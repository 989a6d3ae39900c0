"""Generate stage `questions`, seeded by `topics`: each batch gets `ctx.size` seed rows
(`ctx.seed_rows`, a pyarrow Table), taken in order and cycling when the seed runs out."""

OPENINGS = {"curious": ["What is the first thing to know about", "Why do people love"],
            "practical": ["How do I get started with", "What tools do I need for"]}


def make(ctx):
    openings = OPENINGS[ctx.params["style"]]
    rows = []
    for i, seed in enumerate(ctx.seed_rows.to_pylist()):
        # A real pipeline calls its model here (e.g. an LLM writing the question); this
        # template writes one from the seed row, so it runs offline and deterministically.
        question = f"{ctx.rng.choice(openings)} {seed['topic']}?"
        rows.append({"question_id": ctx.offset + i, "topic_id": seed["topic_id"],
                     "topic": seed["topic"], "question": question})
    return rows
