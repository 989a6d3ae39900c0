"""Generate stage: synthetic personas (no seed).

Columns: persona_id, name, age, occupation, locale.
"""

from __future__ import annotations

import pyarrow as pa

FIRST_NAMES = [
    "Ada",
    "Bruno",
    "Chiara",
    "Dev",
    "Elena",
    "Farid",
    "Grace",
    "Hiro",
    "Ines",
    "Jonas",
    "Kemi",
    "Liam",
    "Mira",
    "Noah",
    "Olga",
    "Priya",
]
LAST_NAMES = [
    "Adler",
    "Baptiste",
    "Chen",
    "Dubois",
    "Eriksen",
    "Fischer",
    "Garcia",
    "Haddad",
    "Ivanova",
    "Jensen",
    "Kowalski",
    "Lopez",
    "Moreau",
    "Nakamura",
]
OCCUPATIONS = [
    "nurse",
    "software engineer",
    "teacher",
    "electrician",
    "accountant",
    "chef",
    "student",
    "farmer",
    "lawyer",
    "graphic designer",
]


def make(ctx) -> pa.Table:
    """Return ``ctx.size`` personas; ids continue from ``ctx.offset``."""
    rng = ctx.rng
    locale = str((ctx.params or {}).get("locale", "en_US"))
    rows = []
    for i in range(ctx.size):
        rows.append(
            {
                "persona_id": ctx.offset + i,
                "name": f"{rng.choice(FIRST_NAMES)} {rng.choice(LAST_NAMES)}",
                "age": rng.randint(18, 80),
                "occupation": rng.choice(OCCUPATIONS),
                "locale": locale,
            }
        )
    schema = pa.schema(
        [
            ("persona_id", pa.int64()),
            ("name", pa.string()),
            ("age", pa.int64()),
            ("occupation", pa.string()),
            ("locale", pa.string()),
        ]
    )
    return pa.Table.from_pylist(rows, schema=schema)
