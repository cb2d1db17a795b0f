"""Command line: `python -m qnets {train,data,results,presets,campaign,readme,bench,notebooks} --help`."""
from __future__ import annotations

import argparse
import dataclasses
import os
import sys


class _Parser(argparse.ArgumentParser):
    """argparse that reports a bad command line in one line (no usage dump)."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def _at_least_one(text: str) -> int:
    """argparse type: a whole number >= 1."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number >= 1")
    return value


def _optional(convert, none_words):
    def parse(text: str):
        return None if text.strip().lower() in none_words else convert(text)
    parse.__name__ = convert.__name__
    return parse


def _field_type(f: dataclasses.Field):
    """argparse converter for a Config field, from its annotation: bool, int, float or str, each
    optionally `| None` (then "none", and for rates "lr", for counts "all", mean None)."""
    from .utils import parse_bool
    converters = {"bool": parse_bool, "int": int, "float": float, "str": str}
    none_words = {"float": ("none", "lr"), "int": ("none", "all")}
    parts = [p.strip() for p in str(f.type).split("|")]
    if parts[0] not in converters or not set(parts[1:]) <= {"None"}:
        raise TypeError(f"Config.{f.name}: no command-line converter for {f.type!r}")
    convert = converters[parts[0]]
    return _optional(convert, none_words.get(parts[0], ("none",))) if "None" in parts else convert


def add_config_flags(parser: argparse.ArgumentParser) -> None:
    from .train import Config
    groups = {"depth": "model", "gamma_g": "ReLinear", "lr": "optimisation", "dataset": "data", "device": "runtime"}
    group = parser
    for f in dataclasses.fields(Config):
        if f.name in groups:
            group = parser.add_argument_group(groups[f.name])
        default = f.default
        group.add_argument(f"--{f.name.replace('_', '-')}", dest=f.name, type=_field_type(f), default=default,
                           metavar=str(f.type).split(" ")[0].upper(), help=f"{f.metadata['help']} (default: {default})".replace("%", "%%"))


def cmd_train(args) -> int:
    from .train import Config, fit, result_path
    fields = {f.name for f in dataclasses.fields(Config)}
    config = Config(**{k: v for k, v in vars(args).items() if k in fields})
    result = fit(config, force=args.force, verbose=not args.quiet)
    acc = result["final_test_acc"]
    print(f"{result['status']}: final test accuracy {acc:.4f}" if acc is not None else
          f"{result['status']}: {result['collapse_reason']}")
    print(f"result written to {result_path(config)}")
    return 0


def cmd_data(args) -> int:
    from .data import load_cifar10
    data = load_cifar10(args.root, args.source)
    where = f"cached in {data.cache}" if data.cache else "not cached (the cache could not be written)"
    print(f"CIFAR-10 from {data.source}: {len(data.train)} training and {len(data.test)} test images; {where}")
    return 0


def cmd_presets(args) -> int:
    from . import experiments
    if args.committed:
        print(experiments.committed_preset(args.notebook))
    else:
        width = max(map(len, experiments.PRESET_HELP))
        for name, text in experiments.PRESET_HELP.items():
            print(f"{name:{width}s}  {text}")
    return 0


def cmd_results(args) -> int:
    from . import experiments
    runtime = {k: getattr(args, k) for k in ("device", "compile") if getattr(args, k)}
    if args.status or args.executor == "submitit":
        from . import cluster, runner
        configs = {k: c.replace(**runtime) for k, c in experiments.plan(args.preset, args.runs).items()}
        if args.status:
            print(runner.status_text(configs, cpu=args.preset in experiments.CPU_PRESETS))
            return 0
        chosen = cluster.options(args.slurm_config, cluster=args.cluster, partition=args.partition,
                                 account=args.account, gpus=args.gpus, cpus=args.cpus, time=args.time,
                                 max_jobs=args.max_jobs)
        submission = cluster.submit(configs, chosen, pack=args.pack, force=args.force, verbose=not args.quiet)
        runs = sum(len(labels) for _, labels in submission["jobs"])
        print(f"submitted {len(submission['jobs'])} jobs ({runs} runs) to submitit's {submission['executor']} "
              f"executor; {len(submission['skipped'])} runs not sent; job logs in {submission['folder']}", flush=True)
        if args.no_wait:
            for label, o in submission["skipped"].items():
                print(cluster.describe(o))
            for job, labels in submission["jobs"]:
                print(f"job {job.job_id}: {', '.join(labels)}; log {job.paths.stdout}")
            print(f"follow them with: python -m qnets results --preset {args.preset} --runs {args.runs} --status")
            return 0
        outcomes = cluster.wait(submission, configs, poll_s=1.0 if submission["executor"] == "local" else 10.0)
        failed = [o["label"] for o in outcomes if o["outcome"] == "failed"]
        held = [o["label"] for o in outcomes if o["outcome"] == "held"]
        waiting = [o["label"] for o in outcomes if o["outcome"] == "waiting"]
        print(f"{len(outcomes) - len(failed) - len(held) - len(waiting)} runs done, {len(held)} left to the jobs "
              f"that hold them, " + (f"{len(waiting)} waiting for trained weights, " if waiting else "")
              + f"{len(failed)} failed" + (f" ({', '.join(failed)})" if failed else ""))
        return 1 if failed else 0
    from .runner import train_plan
    train_plan(args.preset, args.runs, verbose=not args.quiet, pack=args.pack, force=args.force,
                           **runtime)
    return 0


def cmd_campaign(args) -> int:
    from . import campaign, collect, window
    scope = {"preset": args.preset, "only": args.only}
    if args.action == "status":
        print(campaign.status_text(**scope))
    elif args.action == "run":
        if not args.out:
            raise ValueError("campaign run needs --out DIR (the folder that comes back from the GPU machine)")
        summary = window.run(args.budget, args.out, pack=args.pack, verbose=not args.quiet, **scope)
        print(f"finished {len(summary['finished'])} runs, {len(summary['partial'])} partial; stopped because "
              f"{summary['stopped_because']}; {summary['seconds']:.0f} s; written to {args.out}")
    else:
        if not args.folder:
            raise ValueError("campaign collect needs the folder a campaign run wrote")
        taken = collect.collect(args.folder)
        for line in taken["kept"]:
            print(f"kept: {line}")
        print(f"collected {len(taken['results'])} results, {len(taken['weights'])} trained weights and "
              f"{len(taken['partial'])} partial runs "
              f"(from {taken['device']}); status in {taken['status_file']}")
    return 0


def cmd_readme(args) -> int:
    from .report import render_readme
    from .notebooks import repository, sync_repository
    from .bench import render_tables
    for path in args.path or ("README.md", "results/README.md"):
        changed = render_readme(path)
        print(f"{path}: {'tables and verdicts regenerated' if changed else 'already up to date'}")
    tables = "results/bench/README.md"
    print(f"{tables}: {'tables regenerated' if render_tables(tables) else 'already up to date'}")
    for path in sync_repository():
        print(f"{path}: repository address set to {repository()} (from pyproject.toml)")
    return 0


def cmd_bench(args) -> int:
    from . import bench
    return bench.main(args)


def cmd_precision(args) -> int:
    import tempfile
    from pathlib import Path

    from . import precision
    from .timing import device_slug
    from .utils import atomic_json
    with tempfile.TemporaryDirectory() as runs:
        report = precision.measure(args.runs or runs, args.device, args.epochs, tuple(range(args.seeds)),
                                   verbose=not args.quiet)
    path = Path(args.out) / f"precision-{device_slug(report['device'])}.json"
    atomic_json(report, path)
    print(precision.markdown(report))
    print(f"written to {path}")
    return 0


def cmd_notebooks(args) -> int:
    from . import notebooks
    return notebooks.main(args)


def _add_results_parser(p: argparse.ArgumentParser) -> None:
    """`qnets results`: which runs, how (packed, forced) and where (here, or as cluster jobs)."""
    p.add_argument("--preset", required=True, help="smoke, quick, cpu, gpu-short or paper (python -m qnets presets)")
    p.add_argument("--runs", default="all", help="comma-separated notebook numbers or run labels (default: all)")
    p.add_argument("--device", default=None, help="override the preset's device (auto, cpu, cuda)")
    p.add_argument("--compile", default=None, help="override torch.compile (auto, on, off); results are the same config")
    p.add_argument("--pack", type=_at_least_one, default=1, metavar="K",
                   help="train up to K runs at once on one GPU, side by side on CUDA streams (default: 1, lone "
                        "runs); same results and names as lone runs")
    p.add_argument("--force", action="store_true", help="train the selected runs again even where results are stored")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--executor", choices=("local", "submitit"), default="local",
                   help="local: train here, in this process, one run (or pack) after another (default); submitit: "
                        "one job per run (or pack) on Slurm, or as local processes where there is no Slurm")
    p.add_argument("--status", action="store_true",
                   help="train nothing; list the selected runs as done, running (by which job, since when), "
                        "failed (why, with the job's log), partial, waiting (for trained weights) or to do, with the "
                        "time spent and left")
    g = p.add_argument_group("cluster (with --executor submitit; flags override --slurm-config)")
    g.add_argument("--slurm-config", metavar="FILE", default=None,
                   help='JSON with any of the keys below, e.g. {"partition": "gpu", "time": "8:00:00", '
                        '"account": "lab", "extra": {"qos": "normal"}} (extra: further sbatch options)')
    g.add_argument("--partition", default=None, help="Slurm partition")
    g.add_argument("--account", default=None, help="Slurm account to charge")
    g.add_argument("--gpus", type=int, default=None, help="GPUs per job (default: 1)")
    g.add_argument("--cpus", type=int, default=None, help="CPU cores per job (default: the cluster's)")
    g.add_argument("--time", default=None, metavar="LIMIT",
                   help="time limit per job: minutes, H:MM:SS or D-H:MM:SS (default: 4:00:00); a job that reaches "
                        "it is requeued and resumes from its checkpoints")
    g.add_argument("--max-jobs", type=int, default=None, help="at most this many jobs at once (Slurm array limit)")
    g.add_argument("--cluster", choices=("auto", "slurm", "local"), default=None,
                   help="auto: Slurm where a controller answers (scontrol ping), else local processes (default)")
    g.add_argument("--no-wait", action="store_true",
                   help="return once the jobs are submitted (then follow them with --status)")
    p.set_defaults(run=cmd_results)


def _add_campaign_parser(p: argparse.ArgumentParser) -> None:
    """`qnets campaign`: a preset's plan advanced in budgeted windows."""
    from .utils import parse_duration
    p.add_argument("action", choices=("status", "run", "collect"))
    p.add_argument("folder", nargs="?", help="collect: the folder a campaign run wrote")
    p.add_argument("--budget", type=parse_duration, default=480.0,
                   help="run: how long the call may take: seconds, or 90m, 5h, 1h30m (default: 480)")
    p.add_argument("--out", default=None, help="run: the window's output folder, for campaign collect")
    p.add_argument("--pack", type=_at_least_one, default=1, metavar="K",
                   help="run: train up to K runs at once (default: 1)")
    p.add_argument("--preset", default="paper", help="the preset whose runs make the plan: paper (GPU windows) or cpu "
                                                     "(CPU windows) (default: paper)")
    p.add_argument("--only", type=_at_least_one, default=None, help="only the plan's first N runs (trials)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(run=cmd_campaign)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="qnets", description="Quadratic networks and ReLinear (arXiv:2110.06081).")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("train", help="train one configuration (every Config field is a flag)",
                       description="Train a CIFAR ResNet; the result is stored as JSON under <out-dir>/runs/.")
    add_config_flags(p)
    p.add_argument("--force", action="store_true", help="retrain even if a result for this config exists")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(run=cmd_train)

    p = sub.add_parser("data", help="fetch or convert CIFAR-10 into the data folder")
    p.add_argument("--root", default="data", help="data folder (default: data)")
    p.add_argument("--source", default=None, help="official archive, image-folder tree or its archive "
                                                  "(default: $QNETS_CIFAR10, else download)")
    p.set_defaults(run=cmd_data)

    p = sub.add_parser("presets", help="list the experiment presets")
    p.add_argument("--committed", action="store_true", help="print the largest preset each notebook is read at "
                   "(every run stored, or the core of its plan)")
    p.add_argument("--notebook", default=None, help="with --committed: for this notebook only (e.g. 02)")
    p.set_defaults(run=cmd_presets)

    _add_results_parser(sub.add_parser("results", help="train the experiments' configs of a preset, without notebooks"))

    _add_campaign_parser(sub.add_parser("campaign", help="a preset's plan advanced in budgeted, resumable windows "
                                                         "(GPU sessions, CPU windows): status, run, collect"))

    p = sub.add_parser("readme", help="regenerate the READMEs' result tables and verdicts from results/")
    p.add_argument("--path", action="append", default=None,
                   help="a file to regenerate (default: README.md and results/README.md); may repeat")
    p.set_defaults(run=cmd_readme)

    p = sub.add_parser("bench", help="time the reference and fast training paths")
    from .bench import add_arguments
    add_arguments(p)
    p.set_defaults(run=cmd_bench)

    p = sub.add_parser("precision", help="what of a quadratic layer's quadratic terms survives fp32, TF32, bf16 and "
                                         "bf16-split, and short trainings in each")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"), help="where to measure (default: auto)")
    p.add_argument("--epochs", type=int, default=2, help="epochs of the training comparison (default: 2)")
    p.add_argument("--seeds", type=int, default=2, help="seeds of the training comparison (default: 2)")
    p.add_argument("--out", default="results/bench", help="folder of the report (default: results/bench)")
    p.add_argument("--runs", default=None, help="keep the trained runs in this folder (default: a temporary one)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(run=cmd_precision)

    p = sub.add_parser("notebooks", help="execute or check the notebooks")
    from .notebooks import add_arguments as nb_arguments
    nb_arguments(p)
    p.set_defaults(run=cmd_notebooks)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    from .cluster import MissingSubmitit
    from .data import DataError
    try:
        code = args.run(args)
        sys.stdout.flush()  # a reader that stopped early (`| head`) shows here, inside the handlers below
        return code
    except BrokenPipeError:  # not an error of ours: stop quietly, as Unix tools do (128 + SIGPIPE)
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # nothing left to flush at exit
        return 141
    except (ValueError, FileNotFoundError, MissingSubmitit) as e:
        print(f"qnets {args.command}: error: {e}", file=sys.stderr)
        return 2
    except DataError as e:
        print(f"qnets {args.command}: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # a full disk, a read-only folder: one line, naming the file
        where = f"{e.filename}: " if e.filename else ""
        print(f"qnets {args.command}: error: {where}{e.strerror or e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"qnets {args.command}: interrupted; run the same command again to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
