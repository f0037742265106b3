"""Command line: ``python -m pitchtimbre {render,data,reproduce,evaluate,cache}``.

Bad input ends with a one-line ``error:`` message naming the file or field and what to do
(exit status 2), never a traceback.

Chapter: 01_introduction
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import logging
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from .config import PROFILES, ExperimentConfig, profile_config
from .errors import ConfigError, PitchTimbreError


class BackwardsRange(ValueError):
    """A 'HI:LO' range: readable, but most likely a slip, so it is refused with the fix.

    Chapter: 01_introduction
    """


def parse_int_list(text: str) -> tuple[int, ...]:
    """'0 1 5' or '0,1,5' or '0:7' (inclusive range) or a mix -> a tuple of ints.

    Chapter: 01_introduction
    """
    out: list[int] = []
    for part in text.replace(",", " ").split():
        if ":" in part:
            lo, hi = part.split(":", 1)
            if int(hi) < int(lo):
                raise BackwardsRange(f"the range {part} runs backwards; write {hi}:{lo}")
            out.extend(range(int(lo), int(hi) + 1))
        else:
            out.append(int(part))
    return tuple(out)


def parse_range(text: str) -> tuple[int, int]:
    """'48:72' -> (48, 72).

    Chapter: 01_introduction
    """
    lo, colon, hi = text.partition(":")
    if colon and not hi:
        raise ValueError(f"{text!r} has no upper end")
    low, high = int(lo), int(hi or lo)
    if high < low:
        raise BackwardsRange(f"the range {text} runs backwards; write {high}:{low}")
    return (low, high)


_FORMATS = {
    parse_int_list: "numbers such as '60 90 120', '0,1,5' or a range '0:7'",
    parse_range: "a range such as '48:72', or one number",
}


def _arg(parse: Callable[[str], object], name: str) -> Callable[[str], object]:
    # argparse names the option before the message ("argument --pitches: ...")
    def wrapped(text: str) -> object:
        try:
            return parse(text)
        except BackwardsRange as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
        except ValueError:
            wanted = _FORMATS.get(parse, "another value")
            raise argparse.ArgumentTypeError(f"cannot read {text!r}; write {wanted}") from None

    wrapped.__name__ = name
    return wrapped


def folder_arg(text: str) -> Path:
    """An output folder's path as typed (argparse type): refuses an empty one, which an unset
    shell variable gives and which would write into the current folder.

    Chapter: 01_introduction
    """
    if not text.strip():
        raise argparse.ArgumentTypeError("empty; pass the folder to write into")
    return Path(text).expanduser()


def source_arg(text: str) -> str:
    """A ``--source`` as typed (argparse type): refuses an empty one, which an unset shell
    variable gives and which would quietly mean the default SoundFont.

    Chapter: 01_introduction
    """
    if not text.strip():
        raise argparse.ArgumentTypeError("empty; leave --source out for the default SoundFont")
    return text


def writable_folder(path: Path, option: str = "--out") -> Path:
    """``path`` created if needed and checked writable, before any work is done, so a bad
    ``--out`` fails in a second, not after the training.

    Chapter: 01_introduction
    """
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{option} {path}: is a file, not a folder; pass a folder path")
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as exc:
        raise ConfigError(
            f"{option} {path}: cannot write into it ({exc.strerror}); pick a folder you can write"
        ) from None
    return path


@contextlib.contextmanager
def output_folder(path: Path, option: str = "--out") -> Iterator[Path]:
    """:func:`writable_folder`, removed again when this command created it and fails while
    it is still empty (a bad ``--source`` found after the check leaves no stray folder).

    Chapter: 01_introduction
    """
    missing = [p for p in [path, *path.parents] if not p.exists()]  # innermost first
    writable_folder(path, option)
    try:
        yield path
    except BaseException:
        for folder in missing:
            try:
                folder.rmdir()  # only an empty folder goes
            except OSError:
                break
        raise


def build_config(args: argparse.Namespace) -> ExperimentConfig:
    """The profile's settings with the command line's overrides applied.

    Chapter: 01_introduction
    """
    cfg = profile_config(getattr(args, "profile", None))
    overrides: dict[str, object] = {}
    source = getattr(args, "source", None)
    if source:
        overrides["data.source"] = source
    if getattr(args, "seeds", None) is not None:
        if args.seeds < 1:
            raise ConfigError(f"--seeds: must be >= 1, got {args.seeds}")
        overrides["seeds"] = tuple(range(args.seeds))
    for flag, dotted in (("steps", "train.steps"), ("parallel", "train.parallel_models")):
        value = getattr(args, flag, None)
        if value is not None:
            if value < 1:
                raise ConfigError(f"--{flag}: must be >= 1, got {value}")
            overrides[dotted] = value
    return cfg.with_overrides(overrides) if overrides else cfg


def cmd_render(args: argparse.Namespace) -> int:
    """`render`: write an NSynth-layout folder of SoundFont notes.

    Chapter: 02_data
    """
    from .config import RenderConfig
    from .data.render import render_soundfont

    fields: dict[str, object] = {}
    if args.soundfont:
        fields["soundfont"] = str(args.soundfont)
    if args.programs is not None:
        fields["programs"] = args.programs
    if args.pitches is not None:
        fields["pitch_range"] = args.pitches
    if args.velocities is not None:
        fields["velocities"] = args.velocities
    if args.renderer:
        fields["renderer"] = args.renderer
    if args.no_pitch_check:
        fields["pitch_check"] = False
    cfg = RenderConfig(**fields)  # type: ignore[arg-type]
    with output_folder(args.out) as out:
        summary = render_soundfont(cfg, out, progress=not args.quiet)
    print(
        f"wrote {summary.written} of {summary.requested} notes to {args.out} ({summary.renderer}, {summary.seconds} s)"
    )
    for reason, n in summary.excluded.items():
        print(f"  excluded {n:6d}  {reason}")
    return 0


def cmd_data(args: argparse.Namespace) -> int:
    """`data`: build (or reuse) the feature cache and print the data summary.

    Chapter: 02_data
    """
    from .data import load_dataset

    cfg = build_config(args)
    ds = load_dataset(cfg.data, cfg.features, progress=not args.quiet)
    print(f"profile             {cfg.profile}")
    for line in ds.summary.lines():
        print(line)
    print(f"features            {tuple(ds.features.shape[1:])} per note ({cfg.features.kind})")
    print(f"fingerprint         {ds.fingerprint} (features, labels, split, normalisation)")
    return 0


def cmd_reproduce(args: argparse.Namespace) -> int:
    """`reproduce`: train and evaluate both models, print the table beside the poster's.

    Chapter: 01_introduction
    """
    from .experiment import data_line, markdown_table, reproduce
    from .machine import machine_lines

    cfg = build_config(args)
    with output_folder(args.out):
        print(f"profile {cfg.profile}: seeds {list(cfg.seeds)}, {cfg.train.steps} steps per model")
        start = time.perf_counter()
        results = reproduce(cfg, args.out, progress=not args.quiet, fresh=args.fresh)
    if not results:  # another process of a torchrun group: rank 0 reports
        return 0
    print(markdown_table(results))
    secs, step_ms = results["train_seconds"], results["train_step_ms"]
    print(f"training seconds per seed: vanilla {secs['vanilla']}, proposed {secs['proposed']}")
    print(f"ms a step after warm-up: vanilla {step_ms['vanilla']}, proposed {step_ms['proposed']}")
    phases = ", ".join(f"{k} {v:.0f} s" for k, v in results["seconds"].items())
    print(f"reproduce took {time.perf_counter() - start:.0f} s ({phases}, then figures)")
    print("on " + "; ".join(machine_lines(results["machine"])))
    print("data: " + data_line(results["data"]))
    if results["train_processes"] > 1:
        print(f"({results['train_processes']} models trained at a time, in processes of their own)")
    if any(results["loaded_from_cache"]["vanilla"] + results["loaded_from_cache"]["proposed"]):
        print("(models loaded from the cache report the seconds their training took)")
    print(f"wrote {Path(args.out) / 'results.json'}, results.md and figures/")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    """`evaluate`: one trained checkpoint on another source.

    Chapter: 07_results
    """
    from .experiment import evaluate_checkpoint

    with output_folder(args.out) as out:
        results = evaluate_checkpoint(args.checkpoint, args.source, out, progress=not args.quiet)
    ((name, metrics),) = results["models"].items()
    print(
        f"{name} model on {results['source']}: {results['data']['notes']} notes, {results['data']['instruments']} instruments"
    )
    if results["data"]["left_out_seen_instruments"]:
        print(
            f"left out {len(results['data']['left_out_seen_instruments'])} instruments seen in training"
        )
    for space in ("pitch", "timbre"):
        m = metrics[space]
        print(
            f"  {space:6s} denseness {m['denseness']:.3f}  divergence {m['divergence']:.3f}  ratio {m['ratio']:.2f}  "
            f"kNN pitch {m['probe']['pitch']:.2f}  instrument {m['probe']['instrument']:.2f}"
        )
    print(f"wrote {Path(args.out) / 'results.json'}")
    return 0


def cmd_cache(args: argparse.Namespace) -> int:
    """`cache`: list what the package cache holds; ``--prune`` removes what can go.

    Chapter: 05_training
    """
    from .cache import cache_dir
    from .cache_contents import PRUNE_MIN_AGE_S, cache_entries, human_size, prunable, prune_cache

    prune = args.prune or args.dry_run
    if args.other_code and not prune:
        raise ConfigError("--other-code: add --prune (or --dry-run to see what would go)")
    root = cache_dir()
    hours = f"{PRUNE_MIN_AGE_S / 3600:g} h"

    def total(entries: list) -> str:
        return human_size(sum(e.size for e in entries))

    if not prune:
        entries = cache_entries(root)
        width = max((len(e.kind) for e in entries), default=0)
        for e in entries:
            if e.stale:
                why = f"  can go{' with --other-code' if e.other_version else ''}: {e.stale}"
            else:
                why = f"  {e.note}" if e.note else ""
            print(f"{e.kind:{width}s} {human_size(e.size):>9s}  {e.path.relative_to(root)}{why}")
        print(f"{root}: {len(entries)} entries, {total(entries)}")
        now = prunable(entries)
        later = prunable(entries, min_age_s=0.0)
        other = [e for e in prunable(entries, other_code=True) if e.other_version]
        if now:
            print(f"can go now: {len(now)} ({total(now)}), `python -m pitchtimbre cache --prune`")
        if len(later) > len(now):
            print(f"can go once an hour old: {len(later) - len(now)} (may be runs in progress)")
        if other:
            print(
                f"written by another version of pitchtimbre: {len(other)} ({total(other)}), "
                "`cache --prune --other-code` removes them too (the cache is shared by every "
                "environment on this machine: they may be another one's)"
            )
        return 0
    pruned = prune_cache(root, dry_run=args.dry_run, other_code=args.other_code)
    verb = "would remove" if args.dry_run else "removed"
    for e in pruned.removed:
        print(f"{verb} {e.path.relative_to(root)} ({human_size(e.size)}): {e.stale}")
    for path, error in pruned.failed.items():
        print(f"could not remove {path.relative_to(root)}: {error}", file=sys.stderr)
    print(
        f"{root}: {verb} {len(pruned.removed)} entries, {total(pruned.removed)} (anything "
        f"written in the last {hours} is kept: it may belong to a run in progress)"
    )
    if pruned.failed:
        print(f"error: {len(pruned.failed)} entries could not be removed", file=sys.stderr)
        return 1
    return 0


def make_parser() -> argparse.ArgumentParser:
    """The argument parser of ``python -m pitchtimbre``.

    Chapter: 01_introduction
    """
    p = argparse.ArgumentParser(
        prog="python -m pitchtimbre", description=__doc__.splitlines()[0], allow_abbrev=False
    )
    p.add_argument("-v", "--verbose", action="store_true", help="log more")
    sub = p.add_subparsers(dest="command", required=True)

    r = sub.add_parser("render", help="render SoundFont notes into an NSynth-layout folder")
    r.add_argument(
        "--soundfont", type=Path, help="a .sf2/.sf3 file (default: TimGM6mb.sf2 from pretty_midi)"
    )
    r.add_argument(
        "--out",
        type=folder_arg,
        required=True,
        help="folder to write examples.json and audio/ into",
    )
    r.add_argument(
        "--programs",
        type=_arg(parse_int_list, "--programs"),
        help="GM programs, e.g. '0:111' or '0 24 40'",
    )
    r.add_argument(
        "--pitches", type=_arg(parse_range, "--pitches"), help="MIDI range LO:HI (inclusive)"
    )
    r.add_argument(
        "--velocities", type=_arg(parse_int_list, "--velocities"), help="e.g. '60 90 120'"
    )
    r.add_argument("--renderer", choices=("auto", "tinysoundfont", "midirenderer"))
    r.add_argument(
        "--no-pitch-check", action="store_true", help="keep notes whatever pitch pyin hears"
    )
    r.add_argument("--quiet", action="store_true", help="no progress bars")
    r.set_defaults(func=cmd_render)

    d = sub.add_parser("data", help="build (or reuse) the feature cache and print a summary")
    d.add_argument(
        "--source",
        type=source_arg,
        help="'soundfont' (default), a .sf2/.sf3, an NSynth-layout folder or NSynth root",
    )
    d.add_argument(
        "--profile",
        choices=PROFILES,
        help="ci, cpu or gpu (default: $PITCHTIMBRE_PROFILE, else auto)",
    )
    d.add_argument("--quiet", action="store_true", help="no progress bars")
    d.set_defaults(func=cmd_data)

    rp = sub.add_parser(
        "reproduce", help="train vanilla and proposed, evaluate on unseen instruments"
    )
    rp.add_argument(
        "--profile",
        choices=PROFILES,
        help="ci, cpu or gpu (default: $PITCHTIMBRE_PROFILE, else auto)",
    )
    rp.add_argument(
        "--source",
        type=source_arg,
        help="'soundfont' (default), a .sf2/.sf3, an NSynth-layout folder or NSynth root",
    )
    rp.add_argument("--seeds", type=int, help="number of seeds (0..N-1; default: the profile's)")
    rp.add_argument("--steps", type=int, help="training steps per model (default: the profile's)")
    rp.add_argument(
        "--parallel",
        type=int,
        metavar="N",
        help="train N models at a time, each in a process of its own (default: the profile's "
        "train.parallel_models, 1); worth it where one model leaves the device idle; "
        "ignored under torchrun, which trains one model at a time on all its processes",
    )
    rp.add_argument(
        "--out",
        type=folder_arg,
        required=True,
        help="folder for results.json, results.md, figures/",
    )
    again = rp.add_mutually_exclusive_group()
    again.add_argument(
        "--resume",
        action="store_true",
        help="continue killed runs from their last checkpoint and reuse trained models (the default)",
    )
    again.add_argument("--fresh", action="store_true", help="retrain every model from scratch")
    rp.add_argument("--quiet", action="store_true", help="no progress bars")
    rp.set_defaults(func=cmd_reproduce)

    ev = sub.add_parser("evaluate", help="evaluate a trained checkpoint on another source")
    ev.add_argument(
        "--checkpoint", type=Path, required=True, help="a checkpoint.pt (see results.json)"
    )
    ev.add_argument(
        "--source",
        type=source_arg,
        required=True,
        help="a .sf2/.sf3, an NSynth-layout folder or NSynth root",
    )
    ev.add_argument("--out", type=folder_arg, required=True, help="folder for results.json")
    ev.add_argument("--quiet", action="store_true", help="no progress bars")
    ev.set_defaults(func=cmd_evaluate)

    ca = sub.add_parser(
        "cache",
        help="list the package cache ($PITCHTIMBRE_CACHE) and what in it can go",
        description="List the package cache: rendered notes, features, trained models and "
        "results, with their sizes. What can go: runs killed before their first checkpoint, "
        "damaged checkpoints and the leftovers of killed writes; with --other-code, models "
        "trained by other trainer code too. Notes, features, results and symbolic links are "
        "never pruned, nor anything written in the last hour.",
    )
    ca.add_argument("--prune", action="store_true", help="remove what can go")
    ca.add_argument(
        "--other-code",
        action="store_true",
        help="with --prune: also the models another version of pitchtimbre wrote (other "
        "trainer code or checkpoint format; a version sharing this cache may still load them)",
    )
    ca.add_argument(
        "--dry-run", action="store_true", help="say what --prune would remove, remove nothing"
    )
    ca.set_defaults(func=cmd_cache)
    for command in sub.choices.values():  # whole option names only: a script that checks
        command.allow_abbrev = False  # for --profile must not miss --prof
    return p


_OS_ADVICE = {
    errno.ENOENT: "it does not exist; check the path",
    errno.EACCES: "you may not read or write it; check its permissions",
    errno.EPERM: "you may not read or write it; check its permissions",
    errno.ENOSPC: "the disk is full; free some space",
    errno.EROFS: "it is on a read-only file system; write somewhere else",
}


def os_error_line(exc: OSError) -> str:
    """One line for an OSError the package did not foresee: the file(s), the system's
    reason and, for the common causes, what to do.

    Chapter: 01_introduction
    """
    where = str(exc.filename) + (f" -> {exc.filename2}" if exc.filename2 else "")
    advice = _OS_ADVICE.get(exc.errno or -1)
    return f"{where}: {exc.strerror or exc}" + (f"; {advice}" if advice else "")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; bad input ends with one ``error:`` line and exit status 2.

    Chapter: 01_introduction
    """
    parser = make_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s"
    )
    try:
        return int(args.func(args))
    except PitchTimbreError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `python -m pitchtimbre cache | head`: the reader has had enough
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no error at exit
        return 0
    except OSError as exc:  # a file the package did not foresee: unreadable, unwritable, ...
        if exc.filename is None or args.verbose:
            raise  # -v: the traceback, for a bug report
        print(f"error: {os_error_line(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(
            "interrupted: finished files and caches are intact; run the command again to continue",
            file=sys.stderr,
        )
        return 130
