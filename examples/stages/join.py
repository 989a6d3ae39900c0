"""Transform stage: join judged conversations with their personas.

``ctx.inputs`` = {"judged": pyarrow.Table, "personas": pyarrow.Table}.
Output: every judged column plus name, age, occupation, locale.
"""

from __future__ import annotations

import pyarrow as pa

KEY = "persona_id"


def join(ctx) -> pa.Table:
    judged: pa.Table = ctx.inputs["judged"]
    personas: pa.Table = ctx.inputs["personas"]
    # Keep only persona columns the judged table lacks, so the join adds no duplicates.
    persona_cols = [KEY] + [
        c for c in personas.column_names if c not in judged.column_names
    ]
    joined = judged.join(
        personas.select(persona_cols), keys=KEY, join_type="left outer"
    )
    # Table.join does not keep row order; sort for a stable, readable output.
    if "conversation_id" in joined.column_names:
        joined = joined.sort_by([("conversation_id", "ascending")])
    return joined
