"""A build's progress as text: the Reporter that execute.py tells of each stage, printing
through the Console (what was planned, each stage as it starts, batches, its result)."""

from __future__ import annotations

import codecs
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

from .live import StageProgress, progress_text

if TYPE_CHECKING:
    from .console import Console
    from .plan import Decision
    from .report import StageResult


class TextReporter:
    """On a terminal (Console.live), a live line per running stage below the printed lines
    (live.py); elsewhere plain lines only. Its methods may be called from several threads
    (stages run at once under -j, batches report from theirs): one lock serialises them."""

    def __init__(self, out: Console, explain: bool) -> None:
        self.out = out
        self.explain = explain
        self._lock = threading.RLock()
        self._echoes: dict[str, _Echo] = {}
        self._running: dict[str, StageProgress] = {}

    def planned(self, decisions: list[Decision]) -> None:
        if self.explain:
            from .explain import decision_lines

            with self._lock:
                for line in decision_lines(decisions):
                    self.out.text(line)

    def started(self, decision: Decision) -> None:
        why = "; ".join(r.message for r in decision.reasons[:2])
        more = f" (+{len(decision.reasons) - 2} more)" if len(decision.reasons) > 2 else ""
        from .explain import decision_head

        with self._lock:
            self.out.progress(f"▶ {decision.stage}: {decision_head(decision)}: {why}{more}")
            self._running[decision.stage] = state = StageProgress()
            live = self.out.live()
            if live is not None:
                live.show(decision.stage, progress_text(decision.stage, state))

    def progress(self, stage: str, done: int, total: int | None, *, in_flight: int = 0,
                 rows: int = 0, retries: int = 0) -> None:
        """Live: the stage's line redrawn. Plain, with -v: a line each time a batch more is
        done (not for each batch started: the same line twice says nothing)."""
        with self._lock:
            state = self._running.setdefault(stage, StageProgress())
            moved = state.update(done, total, in_flight, rows, retries)
            live = self.out.live(make=False)  # made when a stage started
            if live is not None:
                live.show(stage, progress_text(stage, state))
            if moved and total is not None and self.out.verbose:
                self.out.progress(f"  {stage}: {done} of {total} "
                                  f"{'batch' if total == 1 else 'batches'} done")

    def note(self, stage: str, text: str) -> None:
        with self._lock:
            self.out.progress(f"  {stage}: {text}")

    def command_started(self, stage: str, command: str) -> Callable[[bytes], None] | None:
        """With -v: the command as the shell gets it, and its output as it comes."""
        if not self.out.verbose or self.out.quiet:
            return None
        with self._lock:
            self.out.progress(f"  {stage}: $ {command}")
            self._echoes[stage] = echo = _Echo(self.out, self._lock)
        return echo

    def finished(self, result: StageResult) -> None:
        with self._lock:
            self._running.pop(result.stage, None)
            live = self.out.live(make=False)  # a null build never makes it
            if live is not None:  # its line goes; the result line below takes its place
                live.drop(result.stage)
            self._finished(result)

    def _finished(self, result: StageResult) -> None:
        echo = self._echoes.pop(result.stage, None)
        if self.out.quiet and echo is None and not result.warnings and \
                result.result != "failed":
            return  # nothing of it is shown (a null build of -q: once per stage)
        from .explain import result_line

        if echo is not None:
            echo.close()
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

    def __init__(self, out: Console, lock: threading.RLock) -> None:
        self.out = out
        self.lock = lock  # the reporter's: a command's output comes from a thread of its own
        self.decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self.line_start = True

    def __call__(self, data: bytes) -> None:
        with self.lock:
            self._echo(data)

    def _echo(self, data: bytes) -> None:
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
        self._echo(b"")
        rest = self.decoder.decode(b"", final=True)
        if rest:
            self.out.progress(("" if not self.line_start else self.PREFIX) + rest, end="")
            self.line_start = rest.endswith("\n")
        if not self.line_start:
            self.out.progress("")
            self.line_start = True
