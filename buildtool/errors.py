"""One exception family. Each error a user can cause says what, where and how to fix it."""

from __future__ import annotations

from collections.abc import Iterable

# Exit code of a bug in dd-build (an exception nobody anticipated): EX_SOFTWARE of sysexits.h.
EXIT_INTERNAL = 70


def closest(word: str, options: Iterable[str], cutoff: float = 0.6) -> str | None:
    """The option most like `word` (a misspelling of it), or None when none is close."""
    import difflib  # needed only on an error path: kept out of start-up

    close = difflib.get_close_matches(word, list(options), n=1, cutoff=cutoff)
    return close[0] if close else None


def suggest(word: str, options: Iterable[str]) -> str | None:
    """The hint "did you mean `x`?" for the option most like `word`, or None."""
    close = closest(word, options)
    return f"did you mean `{close}`?" if close is not None else None


def exc_text(exc: BaseException) -> str:
    """`str(exc)`, or what Python's own traceback prints when that raises: an exception of
    user code may define a `__str__` that fails, and its stage must still fail cleanly."""
    try:
        return str(exc)
    except Exception:  # noqa: BLE001 - any failure of user code's __str__
        return "<exception str() failed>"


def describe(exc: BaseException) -> str:
    """`TypeError: text`, on one line and short enough for one screen."""
    text = " ".join(exc_text(exc).split())
    if len(text) > 300:
        text = text[:300] + "…"
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def without_stage(text: str, stage: str) -> str:
    """A rendered error without the `stage 'x'` its location starts with: for a line under one
    that names the stage already (`✗ x: failed`, a status line)."""
    for lead in (f"stage '{stage}': ", f"stage '{stage}', "):
        if text.startswith(lead):
            return text[len(lead):]
    return text


class BuildError(Exception):
    """Base of every error dd-build reports to a user without a traceback."""

    exit_code = 2

    def __init__(
        self,
        message: str,
        *,
        file: str | None = None,
        line: int | None = None,
        column: int | None = None,
        stage: str | None = None,
        key: str | None = None,
        hint: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.file = file
        self.line = line
        self.column = column
        self.stage = stage
        self.key = key
        self.hint = hint

    def where(self) -> str:
        parts = []
        if self.file:
            loc = self.file
            if self.line is not None:
                loc += f":{self.line}"
                if self.column is not None:
                    loc += f":{self.column}"
            parts.append(loc)
        if self.stage:
            parts.append(f"stage '{self.stage}'")
        if self.key:
            parts.append(f"key '{self.key}'")
        return ", ".join(parts)

    def render(self) -> str:
        where = self.where()
        text = f"{where}: {self.message}" if where else self.message
        if self.hint:
            text += f"\n  hint: {self.hint}"
        return text

    def __str__(self) -> str:
        return self.render()

    def fields(self) -> dict[str, str | int]:
        """Where and how to fix, for a `--json` error document: only the parts that are set."""
        found = {"file": self.file, "line": self.line, "column": self.column,
                 "stage": self.stage, "key": self.key, "hint": self.hint}
        return {k: v for k, v in found.items() if v is not None}


class WorkflowError(BuildError):
    """The workflow cannot be built as asked (exit 2): the Workflowfile is invalid, the request
    names what is not there (an unknown target, a misspelt `--force` stage, a stage with no
    output yet), or a file on disk is not usable as it is. `buildtool.WorkflowError` is the
    public name of every exit-2 error: the classes below are kinds of it."""


class UsageError(WorkflowError):
    """The command line, or the arguments of an API call, are invalid (exit 2)."""


class StateError(WorkflowError):
    """Artifacts or inputs on disk are not usable as they are (exit 2)."""


class StageFailed(BuildError):
    """A stage's own code or command failed (exit 1). A build reports it in its BuildReport
    (`result == "failed"`); it is never raised out of `buildtool.build`."""

    exit_code = 1


class UserCodeFailed(StageFailed):
    """The user's code raised (or called sys.exit): `__cause__` is the user's exception, whose
    traceback the failure points into (`raise UserCodeFailed(...) from exc`)."""


class ResumeRefused(BuildError):
    """`--resume always` (`resume="always"`) refused to start a stage fresh (exit 3); raised
    before any stage runs."""

    exit_code = 3


class BuildLocked(BuildError):
    """Another build holds the workflow's lock (exit 4); raised before anything is written."""

    exit_code = 4


class Interrupted(BaseException):  # noqa: N818 - a signal, not an error
    """Raised from the SIGTERM (and SIGHUP) handler so running stages are recorded
    `interrupted`."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


# How many errors of one Workflowfile are shown at once; past it, "and N more".
MAX_SHOWN_ERRORS = 20


class WorkflowErrors(WorkflowError):
    """Several independent mistakes in the Workflowfile, found in one reading (exit 2).

    Its own fields (message, file, line, stage, key, hint) are the first error's, so code that
    handles one `WorkflowError` still works; `errors` holds them all, in the file's order."""

    def __init__(self, errors: list[WorkflowError]) -> None:
        first = errors[0]
        super().__init__(first.message, file=first.file, line=first.line, column=first.column,
                         stage=first.stage, key=first.key, hint=first.hint)
        self.errors = errors

    @property
    def more(self) -> int:
        """How many errors are left out of the report."""
        return max(0, len(self.errors) - MAX_SHOWN_ERRORS)

    def render(self) -> str:
        """One block per error (each as a single error renders), then "and N more"."""
        blocks = [error.render() for error in self.errors[:MAX_SHOWN_ERRORS]]
        if self.more:
            from .wording import counted

            blocks.append(f"… and {counted(self.more, 'more error')} "
                          "(fix these and run again to see them)")
        return "\n".join(blocks)

    def fields(self) -> dict[str, str | int | list[dict[str, str | int]]]:  # type: ignore[override]
        """The first error's fields, as the `error` of a `--json` document (its `message` too:
        the error document's own message is every block), and `errors`: each shown error with
        its rendered message and fields; `more_errors` counts those left out."""
        shown = [{"message": error.render(), **error.fields()}
                 for error in self.errors[:MAX_SHOWN_ERRORS]]
        found: dict[str, str | int | list[dict[str, str | int]]] = {
            "message": shown[0]["message"], **super().fields(), "errors": shown}
        if self.more:
            found["more_errors"] = self.more
        return found
