"""``modelport tune``: flags -> one ``TuneOptions`` -> ``run_tune``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from modelport.errors import InvalidArgumentError
from modelport.loadtest.options import parse_duration
from modelport.loadtest.slo import parse_rate
from modelport.tune.options import OBJECTIVES, SEARCHES, TUNE_PROTOCOLS, TuneOptions, parse_cpus

__all__ = ["add_tune_command"]

_EPILOG = """\
examples:
  modelport tune repo/digits --slo "p99<20ms" --budget 5m
  modelport tune repo/digits --slo "p99<20ms" --slo "error_rate<0.1%" --min-accuracy 0.98 \\
      --search optuna --budget 15m --cpus 0-1 --target-rps 2000 --apply

Each candidate (a variant of the family and its serving settings) runs in its own `modelport serve`
pinned to --cpus; a concurrency sweep finds its highest throughput that meets every SLO. The winner
is re-measured against the default configuration in interleaved rounds and that ratio is reported.
A level with failed requests above --max-error-rate (default 0, unless an --slo on error_rate decides) does
not meet the SLO.
exit code: 0 when a candidate met the SLO, 1 when none did (the closest one is printed).
"""


def add_tune_command(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``tune`` on the CLI's subcommands."""
    p = commands.add_parser(
        "tune",
        help="search variants and serving settings for the most throughput under an SLO",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("model", help="REPO/NAME: the export family NAME in repository REPO")
    p.add_argument("--slo", action="append", default=[], metavar="OBJECTIVE", help="e.g. 'p99<20ms'; repeatable")
    p.add_argument(
        "--max-error-rate",
        type=parse_rate,
        default=None,
        metavar="RATE",
        help="a level with more failed requests than this share misses the SLO (default 0: any)",
    )
    p.add_argument("--objective", choices=OBJECTIVES, default="max-rps", help="what the winner is best at")
    floor = p.add_mutually_exclusive_group()
    floor.add_argument("--min-accuracy", type=float, help="keep variants whose export accuracy is at least this")
    floor.add_argument("--max-agreement-drop", type=float, help="keep variants whose top-1 agreement drops <= this")
    p.add_argument("--budget", default="15m", help="time for the search, e.g. 90s, 15m (default 15m)")
    p.add_argument("--search", choices=SEARCHES, default="quick", help="quick (default), brute or optuna")
    p.add_argument("--protocol", choices=TUNE_PROTOCOLS, default="v2-binary", help="wire protocol (default v2-binary)")
    p.add_argument("--cpus", help="CPUs the server is pinned to, e.g. 0-1 (default: all this process may use)")
    p.add_argument("--out", type=Path, default=Path("tune-out"), help="report directory (default tune-out)")
    p.add_argument("--apply", action="store_true", help="write the winner's config.yaml into the repository")
    p.add_argument("--resume", action="store_true", help="continue from OUT/tune.json, skipping measured candidates")
    p.add_argument("--target-rps", type=float, help="also write a kustomize patch: pod resources and replicas")
    p.add_argument("--knobs", default="", help="tune only these knobs (comma list; the others stay at default)")
    p.add_argument(
        "--data",
        default="random",
        help="request inputs as loadtest takes them: 'random' (default), an .npz, or a directory of files "
        "(images, texts) for a model with processors",
    )
    p.add_argument("--users", default="1,2,4,8,16,32,64", help="the concurrency sweep of each candidate")
    p.add_argument("--level-duration", default="3s", help="time per sweep level, warm-up included (default 3s)")
    p.add_argument("--warmup", default="0.5s", help="the first part of each level not counted (default 0.5s)")
    p.add_argument("--confirm-rounds", type=int, default=2, help="interleaved winner/default rounds (default 2)")
    p.add_argument("--seed", type=int, default=0, help="optuna's sampler seed (default 0)")
    p.add_argument("--quiet", action="store_true", help="only the table and the verdict")
    p.set_defaults(run=_run_tune)


def _ints(text: str, flag: str) -> tuple[int, ...]:
    try:
        values = tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        values = ()
    if not values or min(values) < 1:
        raise InvalidArgumentError(f"{flag} takes a comma list of positive integers, got {text!r}")
    return values


def _run_tune(args: argparse.Namespace) -> int:
    from modelport.storage.base import is_url
    from modelport.tune.run import run_tune

    if is_url(args.model):  # Path() would fold s3://bucket/repo/NAME into s3:/bucket/..., a folder of the cwd
        raise InvalidArgumentError(
            f"{args.model}: tune measures a local repository (it stages each candidate and --apply writes its "
            "config.yaml there); copy the family's model folders to a local REPO and tune REPO/NAME"
        )
    model = Path(args.model)
    options = TuneOptions(
        repository=model.parent,
        family=model.name,
        slos=tuple(args.slo),
        objective=args.objective,
        min_accuracy=args.min_accuracy,
        max_agreement_drop=args.max_agreement_drop,
        budget_s=parse_duration(args.budget, "--budget"),
        search=args.search,
        protocol=args.protocol,
        cpus=parse_cpus(args.cpus),
        out=args.out,
        apply=args.apply,
        resume=args.resume,
        target_rps=args.target_rps,
        levels=_ints(args.users, "--users"),
        level_s=parse_duration(args.level_duration, "--level-duration"),
        warmup_s=parse_duration(args.warmup, "--warmup"),
        knobs=tuple(k.strip() for k in args.knobs.split(",") if k.strip()),
        data=args.data,
        confirm_rounds=args.confirm_rounds,
        seed=args.seed,
        quiet=args.quiet,
        max_error_rate=args.max_error_rate,
    )
    result = run_tune(options)
    if not result.ok:
        from modelport.tune.table import verdict

        print(f"modelport tune: {verdict(result)[-1]}", file=sys.stderr)
        return 1
    return 0
