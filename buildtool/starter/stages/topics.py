"""Generate stage `topics`: called once per batch; returns `ctx.size` rows."""

TOPICS = ["bread baking", "bicycle repair", "houseplants", "tide pools", "chess openings",
          "sourdough starters", "knot tying", "bird song", "night skies", "pottery glazes"]


def make(ctx):
    # ctx.rng is seeded from the stage and the batch: the same rows on every run.
    return [{"topic_id": ctx.offset + i, "topic": ctx.rng.choice(TOPICS)}
            for i in range(ctx.size)]
