"""A dd-build transform over the judged rows: one row per persona name."""


def summarize(ctx):
    table = ctx.inputs["judged"].to_pylist()
    by_name: dict[str, list[int]] = {}
    for row in table:
        by_name.setdefault(row["name"], []).append(int(row["quality"]["helpfulness"]["score"]))
    return [{"name": n, "answers": len(s), "mean_helpfulness": sum(s) / len(s)}
            for n, s in sorted(by_name.items())]
