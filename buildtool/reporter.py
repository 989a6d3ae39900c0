"""A build's progress as text: the Reporter that execute.py tells of each stage, printing
through the Console (what was planned, each stage as it starts, batches, its result)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .console import Console
    from .plan import Decision
    from .report import StageResult


class TextReporter:
    def __init__(self, out: Console, explain: bool) -> None:
        self.out = out
        self.explain = explain
        self._last_tty_line = False

    def planned(self, decisions: list[Decision]) -> None:
        if self.explain:
            from .explain import decision_lines

            for line in decision_lines(decisions):
                self.out.text(line)

    def started(self, decision: Decision) -> None:
        why = "; ".join(r.message for r in decision.reasons[:2])
        more = f" (+{len(decision.reasons) - 2} more)" if len(decision.reasons) > 2 else ""
        from .explain import decision_head

        self.out.progress(f"▶ {decision.stage}: {decision_head(decision)}: {why}{more}")

    def progress(self, stage: str, done: int, total: int | None) -> None:
        if total is None or self.out.quiet or not (self.out.verbose or self.out.tty):
            return
        line = f"  {stage}: batch {done}/{total}"
        if self.out.tty and not self.out.verbose:
            self.out.progress(f"\r\033[K{line}", "\n" if done >= total else "")
        else:
            self.out.progress(line)

    def note(self, stage: str, text: str) -> None:
        self.out.progress(f"  {stage}: {text}")

    def finished(self, result: StageResult) -> None:
        from .explain import result_line

        if result.result == "failed":  # an error: on stderr, and shown even with -q
            self.out.error(result_line(result))
        else:
            self.out.text(result_line(result))
