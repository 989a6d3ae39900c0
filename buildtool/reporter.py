"""A build's progress as text: the Reporter that execute.py tells of each stage, printing
through the Console (what was planned, each stage as it starts, batches, its result)."""

from __future__ import annotations

import codecs
from collections.abc import Callable
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
        self._echo: _Echo | None = None

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

    def progress(self, stage: str, done: int, total: int | None, **figures: int) -> None:
        if total is None or self.out.quiet or not (self.out.verbose or self.out.tty):
            return
        line = f"  {stage}: {done} of {total} {'batch' if total == 1 else 'batches'} done"
        if self.out.tty and not self.out.verbose:
            self.out.progress(f"\r\033[K{line}", "\n" if done >= total else "")
        else:
            self.out.progress(line)

    def note(self, stage: str, text: str) -> None:
        self.out.progress(f"  {stage}: {text}")

    def command_started(self, stage: str, command: str) -> Callable[[bytes], None] | None:
        """With -v: the command as the shell gets it, and its output as it comes."""
        if not self.out.verbose or self.out.quiet:
            return None
        self.out.progress(f"  {stage}: $ {command}")
        self._echo = _Echo(self.out)
        return self._echo

    def finished(self, result: StageResult) -> None:
        if self.out.quiet and self._echo is None and not result.warnings and \
                result.result != "failed":
            return  # nothing of it is shown (a null build of -q: once per stage)
        from .explain import result_line

        if self._echo is not None:
            self._echo.close()
            self._echo = None
        if result.result == "failed":  # an error: on stderr, and shown even with -q
            if self.out.verbose and result.traceback:
                self.out.error(result.traceback.rstrip())
            self.out.error(result_line(result))
        else:
            self.out.text(result_line(result))
        hints = []
        for warning in result.warnings:  # on stderr, and shown even with -q
            self.out.error(f"warning: stage '{result.stage}': {warning.message}")
            if warning.hint and warning.hint not in hints:
                hints.append(warning.hint)
        for hint in hints:  # once, after the warnings it is for
            self.out.error(f"  hint: {hint}")


class _Echo:
    """A command's output as it comes, each line behind `    | ` (as a failure shows the last
    lines of a log). Bytes are decoded as UTF-8 as they come; a character split between two
    reads is decoded whole."""

    PREFIX = "    | "

    def __init__(self, out: Console) -> None:
        self.out = out
        self.decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self.line_start = True

    def __call__(self, data: bytes) -> None:
        text = self.decoder.decode(data)
        if not text:
            return
        pieces = []
        for part in text.splitlines(keepends=True):  # a `\r` (a progress bar) ends one too
            if self.line_start:
                pieces.append(self.PREFIX)
            pieces.append(part)
            self.line_start = part.endswith(("\n", "\r"))
        self.out.progress("".join(pieces), end="")

    def close(self) -> None:
        """The command ended: a last line without its newline gets one."""
        self(b"")
        rest = self.decoder.decode(b"", final=True)
        if rest:
            self.out.progress(("" if not self.line_start else self.PREFIX) + rest, end="")
            self.line_start = rest.endswith("\n")
        if not self.line_start:
            self.out.progress("")
            self.line_start = True
