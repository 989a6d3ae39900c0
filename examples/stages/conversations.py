"""Generate stage: conversations seeded from personas (the "explode" case).

20 personas seed 200 conversations: dd-build hands each batch exactly
``ctx.size`` seed rows, cycling through the personas in order.

Columns: conversation_id, persona_id, topic, num_turns, text.
"""

from __future__ import annotations

import pyarrow as pa

TOPICS = {
    "nurse": ["night-shift scheduling", "medication reminders", "burnout"],
    "software engineer": [
        "a flaky test",
        "code review etiquette",
        "a database migration",
    ],
    "teacher": ["grading essays", "a field trip", "classroom noise"],
    "electrician": ["a tripping breaker", "quoting a rewiring job", "safety gear"],
    "accountant": ["year-end closing", "a spreadsheet error", "tax deadlines"],
    "chef": ["a new menu", "food costs", "a kitchen hire"],
    "student": ["exam revision", "a part-time job", "choosing a major"],
    "farmer": ["a dry summer", "selling at a market", "a broken tractor"],
    "lawyer": ["a contract clause", "billing hours", "a client meeting"],
    "graphic designer": ["a logo brief", "print colours", "freelance pricing"],
}
GENERIC_TOPICS = ["planning a trip", "saving money", "learning a language"]

USER_LINES = [
    "Hi, I'm {name}, a {age}-year-old {occupation}. Can you help me with {topic}?",
    "As a {occupation}, I keep running into trouble with {topic}. Any ideas?",
    "Quick question about {topic} - where should I start?",
]
FOLLOW_UPS = [
    "That helps. What would you do first?",
    "Could you give me a concrete example?",
    "How long would that usually take?",
    "What is the most common mistake here?",
]
ASSISTANT_LINES = [
    "Good question. For {topic}, start by writing down what you already know.",
    "Many people in your situation break {topic} into three small steps.",
    "A practical first step for {topic} is to ask someone who has done it before.",
    "With {topic}, the common mistake is doing everything at once; pick one thing.",
]


def _conversation(rng, persona: dict, topic: str, num_turns: int) -> str:
    fields = {**persona, "topic": topic}
    replies = rng.sample(ASSISTANT_LINES, num_turns)
    follow_ups = rng.sample(FOLLOW_UPS, num_turns - 1)
    lines = [f"User: {rng.choice(USER_LINES).format(**fields)}"]
    for turn in range(num_turns):
        # A real pipeline calls its model here, e.g.
        #   reply = client.chat(model=..., messages=[{"role": "user", "content": ...}])
        # This example writes a templated reply with ctx.rng so it stays deterministic.
        lines.append(f"Assistant: {replies[turn].format(**fields)}")
        if turn < num_turns - 1:
            lines.append(f"User: {follow_ups[turn]}")
    return "\n".join(lines)


def make(ctx) -> pa.Table:
    """One conversation per seed row; ids continue from ``ctx.offset``."""
    rng = ctx.rng
    params = ctx.params or {}
    # Each turn uses a distinct template, so turns are capped at len(ASSISTANT_LINES).
    max_turns = max(1, min(int(params.get("max_turns", 4)), len(ASSISTANT_LINES)))
    min_turns = max(1, min(int(params.get("min_turns", 2)), max_turns))
    if ctx.seed_rows is None:
        raise ValueError(f"stage {ctx.stage_name!r} needs a seed of personas")
    personas = ctx.seed_rows.to_pylist()

    rows = []
    for i in range(ctx.size):
        persona = personas[i % len(personas)]
        topic = rng.choice(TOPICS.get(persona.get("occupation"), GENERIC_TOPICS))
        num_turns = rng.randint(min_turns, max_turns)
        rows.append(
            {
                "conversation_id": ctx.offset + i,
                "persona_id": persona["persona_id"],
                "topic": topic,
                "num_turns": num_turns,
                "text": _conversation(rng, persona, topic, num_turns),
            }
        )
    schema = pa.schema(
        [
            ("conversation_id", pa.int64()),
            ("persona_id", pa.int64()),
            ("topic", pa.string()),
            ("num_turns", pa.int64()),
            ("text", pa.string()),
        ]
    )
    return pa.Table.from_pylist(rows, schema=schema)
