"""`dd-build cache status` and `dd-build cache gc`: what the build cache holds, and making
it smaller (cache.py)."""

from __future__ import annotations

import argparse
import os
import time
from typing import TYPE_CHECKING, Any

from .errors import UsageError
from .wording import counted

if TYPE_CHECKING:
    from .console import Console
    from .model import Workflow


def cache_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=("status", "gc"), metavar="ACTION",
                        help="status: size and entries per stage; gc: remove the least "
                             "recently used entries")
    parser.add_argument("--max-size", metavar="SIZE",
                        help="gc: keep at most SIZE (e.g. 10GB, 500MB, 0)")
    parser.add_argument("--keep-last", type=int, metavar="N",
                        help="gc: keep only the N most recently used entries of each stage")
    parser.add_argument("-n", "--dry-run", action="store_true",
                        help="gc: say what would be removed; remove nothing")


def cmd_cache(args: argparse.Namespace, out: Console, workflow: Workflow) -> int:
    from .cache import cache_of, parse_size

    cache = cache_of(workflow)
    if cache is None:
        raise UsageError("the build cache is off (DD_BUILD_CACHE=off)",
                         hint="unset DD_BUILD_CACHE to use it")
    if args.action == "status":
        if args.max_size is not None or args.keep_last is not None:
            raise UsageError("cache status takes no --max-size or --keep-last",
                             hint="dd-build cache gc --max-size 10GB --keep-last 3")
        return _status(cache, out, args.json)
    if args.max_size is None and args.keep_last is None:
        raise UsageError("cache gc: say what to keep: --max-size SIZE and/or --keep-last N",
                         hint="e.g. dd-build cache gc --max-size 10GB, or --keep-last 3")
    if args.keep_last is not None and args.keep_last < 0:
        raise UsageError(f"--keep-last {args.keep_last}: a whole number of 0 or more")
    max_size = None if args.max_size is None else parse_size(args.max_size)
    return _gc(cache, out, args, max_size)


def _shown(path: Any) -> str:
    try:
        return os.path.relpath(path)
    except ValueError:
        return str(path)


def _status(cache: Any, out: Console, as_json: bool) -> int:
    from .cache import human_size, object_sizes, pinned_digests, scan

    entries = scan(cache)
    sizes = object_sizes(cache)
    total = sum(sizes.values())
    stages: dict[tuple[str, str], list[Any]] = {}
    for e in entries:
        if e.sound:
            stages.setdefault((e.workflow, e.stage), []).append(e)
    rows = []
    for (workflow, stage), found in sorted(stages.items()):
        digests = {d for e in found for d in e.digests}
        rows.append({"workflow": workflow, "stage": stage, "entries": len(found),
                     "size": sum(sizes.get(d, 0) for d in digests),
                     "last_used": max(e.last_used for e in found)})
    damaged = sum(1 for e in entries if not e.sound)
    reviews = len(pinned_digests(cache))
    out.text(f"build cache {_shown(cache.root)}: {human_size(total)} in "
             f"{counted(len(sizes), 'object')}, {counted(len(entries) - damaged, 'entry')}")
    width = max((len(f"{r['workflow']}/{r['stage']}") for r in rows), default=0)
    for r in rows:
        name = f"{r['workflow']}/{r['stage']}"
        out.text(f"  {name.ljust(width)}  {counted(r['entries'], 'entry')}, "
                 f"{human_size(r['size'])}, last used {_when(r['last_used'])}")
    if damaged:
        out.text(f"  {counted(damaged, 'damaged entry')}: never restored; "
                 "`dd-build cache gc` removes them")
    if as_json:
        out.document({"ok": True, "cache": str(cache.root), "size": total,
                      "objects": len(sizes), "entries": len(entries) - damaged,
                      "damaged": damaged, "review_objects": reviews, "stages": rows})
    return 0


def _gc(cache: Any, out: Console, args: argparse.Namespace, max_size: int | None) -> int:
    from .cache import collect, human_size

    result = collect(cache, max_size, args.keep_last, dry_run=args.dry_run,
                     waiting=lambda: out.progress(
                         "waiting for a build that is storing or restoring to finish"))
    verb = "would remove" if args.dry_run else "removed"
    out.text(f"{verb} {counted(len(result.removed), 'entry')} and "
             f"{counted(result.objects_removed, 'object')} ({human_size(result.bytes_freed)}); "
             f"the cache holds {human_size(result.size_after)} in "
             f"{counted(len(result.kept), 'entry')}")
    if args.json:
        out.document({"ok": True, "cache": str(cache.root), "dry_run": args.dry_run,
                      "removed": [{"workflow": e.workflow, "stage": e.stage,
                                   "built_at": e.built_at, "last_used": e.last_used}
                                  for e in result.removed],
                      "entries_removed": len(result.removed),
                      "objects_removed": result.objects_removed,
                      "bytes_freed": result.bytes_freed, "size": result.size_after,
                      "entries": len(result.kept)})
    return 0


def _when(stamp: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(stamp))
