import sys
from pathlib import Path

import pyarrow.parquet as pq

table = pq.read_table(sys.argv[1]).to_pylist()
out = Path(sys.argv[2])
out.parent.mkdir(parents=True, exist_ok=True)
lines = ["# Judged answers", "", "| name | answers | mean helpfulness |", "|---|---|---|"]
lines += [f"| {r['name']} | {r['answers']} | {r['mean_helpfulness']:.2f} |" for r in table]
out.write_text("\n".join(lines) + "\n")
