"""The `i2vd` command line: argument parsing and printing, nothing else.

Each subcommand is a small function taking the parsed arguments and returning an
exit code, so tests call `main([...])` in-process.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import signal
import sqlite3
import sys
from collections.abc import Sequence
from pathlib import Path

from i2vd import __version__
from i2vd.cli.process import settle_collector, silence_stdout

# The config models and the journal are most of every command's start (~0.2 s of CPU on a small machine), all of it
# long-lived objects that the cyclic collector would walk some 70 times meanwhile (~10 ms): off while they load.
_collecting = gc.isenabled()
gc.disable()
try:
    from i2vd.config.load import Config, ConfigError, config_path, load_config
    from i2vd.store.journal import JobState, Journal, JournalVersionError
finally:
    if _collecting:
        gc.enable()

EX_CONFIG = 78
EX_UNAVAILABLE = 69
EX_CANTCREAT = 73
EX_SIGPIPE = 128 + signal.SIGPIPE  # what a shell reports for a tool its reader stopped reading (`yes | head`)


def _setup_logging(level: str = "info") -> None:
    from i2vd.core.logs import configure

    configure(level)


def _load(arguments: argparse.Namespace) -> Config:
    return load_config(config_path(arguments.config))


def _daemon_alive(config: Config) -> bool:
    """A daemon runs on this state_dir: an older journal is then its release's to keep, not ours to upgrade."""
    from i2vd.store.status import daemon_alive

    return daemon_alive(config)


def _missing_config(arguments: argparse.Namespace) -> str | None:
    """Without -c, when no config is where i2vd looks: what was tried and what to do. (A -c file that
    does not exist is load_config's to report, like any other file it cannot read.)"""
    from i2vd.config import load as config_module

    if "config" not in vars(arguments) or arguments.config or config_path(None).exists():
        return None
    environment = os.environ.get("I2VD_CONFIG")
    tried = (
        f"$I2VD_CONFIG={environment} (no such file)"
        if environment
        else f"$I2VD_CONFIG (not set), {config_module.DEFAULT_CONFIG_PATH} (no such file)"
    )
    return (
        f"i2vd {arguments.command}: no config file found; tried -c (not given), {tried}.\n"
        f"Pass one with -c, e.g. `i2vd {arguments.command} -c demo-out/config.yaml` (the config `make demo` writes), "
        "or set $I2VD_CONFIG; config.example.yaml lists every key."
    )


def _open_journal(config: Config, *, read_only: bool = False) -> Journal | None:
    from i2vd.store.journal import journal_path

    path = journal_path(config)
    try:
        if not path.exists():
            print(f"no journal yet at {path} (has `i2vd run` started with this config?)", file=sys.stderr)
            return None
        return Journal(path, read_only=read_only, upgrade=not read_only and not _daemon_alive(config))
    except (OSError, sqlite3.Error) as error:
        reason = getattr(error, "strerror", None) or error
        print(
            f"i2vd: cannot open the journal {path}: {reason} (run as the service's user, e.g. sudo -u i2vd)",
            file=sys.stderr,
        )
        return None


def command_run(arguments: argparse.Namespace) -> int:
    from i2vd.core.lock import AlreadyRunning
    from i2vd.render.gpu import GpuReadError
    from i2vd.service.daemon import Daemon, WebListenError

    path = config_path(arguments.config)
    config = load_config(path)
    _setup_logging(config.log_level)
    daemon = Daemon(config, config_path=path)
    # Before start(): a signal during start-up is acted on as soon as serve() runs, never fatal.
    for signal_number in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signal_number, daemon.on_signal)
    try:
        daemon.start()
    except AlreadyRunning as error:
        print(f"i2vd: {error}", file=sys.stderr)
        return 1
    except GpuReadError as error:
        # Not 78: a driver that is late at boot must not keep the service down for good.
        print(f"i2vd: gpu: {error}", file=sys.stderr)
        daemon.shutdown(0)
        return EX_UNAVAILABLE
    except WebListenError as error:  # before OSError, which it is: a port in use may be free again soon
        print(f"i2vd: {error}", file=sys.stderr)
        return EX_UNAVAILABLE
    except OSError as error:
        print(f"i2vd: state_dir {config.state_dir}: {error.strerror or error}", file=sys.stderr)
        return EX_CANTCREAT
    settle_collector()
    try:
        daemon.serve()
    finally:
        daemon.shutdown()
    return 0


def command_worker(arguments: argparse.Namespace) -> int:
    from i2vd.cluster.gpu_worker import main_worker

    return main_worker(config_path(arguments.config))


def _print(arguments: argparse.Namespace, data: object, render) -> None:
    print(json.dumps(data, indent=2, sort_keys=True) if arguments.json else render(data))


def _gpu_host(arguments: argparse.Namespace, error: ConfigError):
    """A GPU host's config (`i2vd worker`'s) given to check or status: that config, else the error again."""
    from i2vd.cli.gpu_host import gpu_host_config

    worker = gpu_host_config(config_path(arguments.config))
    if worker is None:
        raise error
    return worker


def command_status(arguments: argparse.Namespace) -> int:
    from i2vd.store.status import gather_status, render_status

    try:
        config = _load(arguments)
    except ConfigError as error:
        from i2vd.cli.gpu_host import broker_and_workers, render_gpu_host_status

        _print(arguments, broker_and_workers(_gpu_host(arguments, error)), render_gpu_host_status)
        return 0
    journal = _open_journal(config, read_only=True)
    if journal is None:
        return 1
    try:
        _print(arguments, gather_status(config, journal), render_status)
    finally:
        journal.close()
    return 0


def command_jobs(arguments: argparse.Namespace) -> int:
    from i2vd.store.status import render_jobs

    config = _load(arguments)
    journal = _open_journal(config, read_only=True)
    if journal is None:
        return 1
    try:
        jobs = journal.jobs(JobState(arguments.state) if arguments.state else None, limit=arguments.limit)
    finally:
        journal.close()
    _print(arguments, [job.as_dict() for job in jobs], lambda _: render_jobs(jobs))
    return 0


def command_retry(arguments: argparse.Namespace) -> int:
    from i2vd.ingest.operations import retry

    config = _load(arguments)
    journal = _open_journal(config)
    if journal is None:
        return 1
    try:
        results = retry(config, journal, None if arguments.failed else [arguments.job_id])
        if not results and not arguments.failed:
            job = journal.job(arguments.job_id)
            reason = "no such job" if job is None else f"it is {job.state.value} (only failed or done jobs are retried)"
            print(f"i2vd: cannot retry job {arguments.job_id}: {reason}", file=sys.stderr)
            return 1
    finally:
        journal.close()
    if not results:
        print("nothing to retry: no failed jobs")
    for result in results:
        job = result.job
        detail = f" ({result.reason})" if result.reason else f" with profile {job.profile_name}"
        print(f"job {job.id} {job.rel_path}: {result.outcome}{detail}")
    return 0 if all(result.ok for result in results) else 1


def command_forget(arguments: argparse.Namespace) -> int:
    from i2vd.ingest.operations import forget

    config = _load(arguments)
    journal = _open_journal(config)
    if journal is None:
        return 1
    try:
        forgotten, problems = forget(journal, None if arguments.failed else [arguments.job_id])
    finally:
        journal.close()
    for problem in problems:
        print(f"i2vd: {problem}", file=sys.stderr)
    if arguments.failed and not forgotten:
        print("nothing to forget: no failed jobs")
    for job in forgotten:
        print(f"job {job.id} {job.rel_path}: forgotten (no longer counted as failed; its file is untouched)")
    return 1 if problems else 0


def command_enqueue(arguments: argparse.Namespace) -> int:
    from i2vd.cli.batch import enqueue_paths, unknown_profile
    from i2vd.store.journal import journal_path

    config = _load(arguments)
    problem = unknown_profile(config, arguments.profile)
    if problem is not None:
        print(f"i2vd enqueue: --profile: {problem}", file=sys.stderr)
        return 2
    journal = Journal(journal_path(config), upgrade=not _daemon_alive(config))
    try:
        results = enqueue_paths(
            config, journal, [Path(path) for path in arguments.paths], profile_name=arguments.profile
        )
    finally:
        journal.close()
    for path, result in results:
        job = f"job {result.job.id} " if result.job else ""
        print(f"{result.outcome.value:9} {job}{path}{': ' + result.reason if result.reason else ''}")
    return 1 if any(result.outcome.value in ("failed", "not ready") for _, result in results) else 0


def command_batch(arguments: argparse.Namespace) -> int:
    from i2vd.cli.batch import run_batch

    config = _load(arguments)
    _setup_logging("warning" if not arguments.verbose else config.log_level)
    return run_batch(
        config,
        Path(arguments.folder),
        profile_name=arguments.profile,
        output_dir=Path(arguments.output) if arguments.output else None,
    )


def command_check(arguments: argparse.Namespace) -> int:
    from i2vd.cli.check import run_check

    try:
        config = _load(arguments)
    except ConfigError as error:
        from i2vd.cli.gpu_host import run_gpu_host_check

        return run_gpu_host_check(_gpu_host(arguments, error), sys.stdout)
    return run_check(config, Path(arguments.path) if arguments.path else None, sys.stdout)


def command_probe(arguments: argparse.Namespace) -> int:
    from i2vd.cli.probe import run_probe

    return run_probe(arguments, _load)


def command_demo(arguments: argparse.Namespace) -> int:
    from i2vd.cli.demo import run_demo

    _setup_logging("warning")
    return run_demo(
        Path(arguments.dir) if arguments.dir else None, images_per_folder=arguments.images, comfyui=arguments.comfyui
    )


def command_config(arguments: argparse.Namespace) -> int:
    from i2vd.config.reference import reference

    sys.stdout.write(reference())
    return 0


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not a positive number")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="i2vd", description="Hot-folder image-to-video service.")
    parser.add_argument("--version", action="version", version=f"i2vd {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, function, help_text: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_text, description=help_text)
        sub.add_argument("-c", "--config", help="config file (default: $I2VD_CONFIG or /etc/i2vd/config.yaml)")
        sub.set_defaults(function=function)
        return sub

    add("run", command_run, "run the daemon")
    add("worker", command_worker, "on a GPU host: take jobs from the ingest host's queue (executor: celery)")
    status = add("status", command_status, "queue counts, current job, server and GPU state")
    status.add_argument("--json", action="store_true")
    jobs = add("jobs", command_jobs, "list jobs")
    jobs.add_argument("--state", choices=[state.value for state in JobState])
    jobs.add_argument("--limit", type=int, default=None)
    jobs.add_argument("--json", action="store_true")
    retry = add("retry", command_retry, "queue a job (or every failed job) again")
    which = retry.add_mutually_exclusive_group(required=True)
    which.add_argument("job_id", nargs="?", type=int, metavar="ID")
    which.add_argument("--failed", action="store_true", help="every failed job")
    forget = add("forget", command_forget, "drop failed jobs from the counts; no file is touched")
    which = forget.add_mutually_exclusive_group(required=True)
    which.add_argument("job_id", nargs="?", type=int, metavar="ID")
    which.add_argument("--failed", action="store_true", help="every failed job")
    enqueue = add("enqueue", command_enqueue, "record jobs for these images (or folders) now")
    enqueue.add_argument("paths", nargs="+", metavar="PATH")
    enqueue.add_argument("--profile", default="default")
    batch = add("batch", command_batch, "process a folder tree and exit, with a progress bar; resumable")
    batch.add_argument("folder", metavar="DIR")
    batch.add_argument("--profile", default="default")
    batch.add_argument("--output", help="output folder (default: the config's output_dir)")
    batch.add_argument("-v", "--verbose", action="store_true", help="log each job")
    check = add("check", command_check, "validate config and sidecars; show each image's profile, prompt and output")
    check.add_argument("path", nargs="?", metavar="PATH", help="a folder to check (default: every watch root)")
    probe = add(
        "probe", command_probe, "connect to a server: kind, version, endpoints and the parameter mapping i2vd would use"
    )
    probe.add_argument("url", nargs="?", metavar="URL", help="the server (default: every server in the config)")
    probe.add_argument("--json", action="store_true")
    probe.add_argument("--timeout", type=float, default=10.0, help="seconds per request (default 10)")
    demo = commands.add_parser("demo", help="the built-in engine end to end on generated sample images")
    demo.add_argument("--dir", help="work folder (default: a new temporary folder)")
    demo.add_argument("--images", type=_positive, default=2, help="sample images per folder")
    demo.add_argument(
        "--comfyui", metavar="URL", help="make the videos on this ComfyUI (a model-free workflow) instead"
    )
    demo.set_defaults(function=command_demo)
    reference = commands.add_parser("config", help="print the documented reference config (every key, its default)")
    reference.add_argument("--example", action="store_true", required=True, help="every key with its default")
    reference.set_defaults(function=command_config)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    return _run(build_parser().parse_args(argv))


def program() -> None:
    """The `i2vd` program (the console script, `python -m i2vd`): main, then exit with its code. status and jobs,
    read-only, have closed their journal and flushed their output by then: they end at once, without tearing down
    the interpreter (~400 modules, the config models), which was ~30 ms of CPU, an eighth of `i2vd status`."""
    arguments = build_parser().parse_args()
    code = _run(arguments)
    if arguments.command in ("status", "jobs"):
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        except (BrokenPipeError, ValueError, AttributeError):  # a reader gone, a stream closed or None
            pass  # main has said what it could
        os._exit(code)
    sys.exit(code)


def _run(arguments: argparse.Namespace) -> int:
    try:
        code = arguments.function(arguments)
        sys.stdout.flush()  # what is still buffered goes now, where a closed pipe is handled, not at exit
        return code
    except BrokenPipeError:
        silence_stdout()
        return EX_SIGPIPE
    except ConfigError as error:
        print(_missing_config(arguments) or error.report(), file=sys.stderr)
        return EX_CONFIG
    except JournalVersionError as error:
        # A newer journal is a configuration problem for this release (78: systemd does not restart);
        # an older one read by status or jobs only needs `i2vd run` once.
        print(f"i2vd: {error}", file=sys.stderr)
        return EX_CONFIG if error.newer else 1
    except KeyboardInterrupt:
        return 130
