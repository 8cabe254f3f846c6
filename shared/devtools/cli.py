"""The `complaints` command (contract section 5): dev, run, simulate, bench, migrate, keys, ledger, dlq."""

from __future__ import annotations

import argparse
import asyncio
import importlib
import os
import sys
from pathlib import Path

from shared.devtools.catalog import SERVICES, available_services


def _cmd_run(args: argparse.Namespace) -> int:
    import uvicorn

    from shared.settings import Settings

    if args.service not in available_services():
        print(
            f"error: service {args.service!r} is not built yet; available: {', '.join(available_services())}",
            file=sys.stderr,
        )
        return 2
    from shared.observability import setup_logging

    settings = Settings()
    setup_logging(settings.log_level, settings.log_format)  # uvicorn's own lines too: log_config=None below
    module = importlib.import_module(f"services.{args.service}.app")
    app = module.create_app(settings)
    port = args.port or settings.port_for(args.service)
    uvicorn.run(
        app,
        host=args.host or settings.http_host,
        port=port,
        log_level="warning",
        log_config=None,
        access_log=False,
        # The socket's peer is the client: uvicorn would otherwise take X-Forwarded-For from 127.0.0.1 on its own
        # say. The portal believes the header only from the proxies of PORTAL_TRUSTED_PROXIES (contract 10.1).
        proxy_headers=False,
        timeout_graceful_shutdown=20,
    )
    return 0


def _cmd_migrate(_: argparse.Namespace) -> int:
    from shared.migrate import migrate
    from shared.settings import Settings

    applied = asyncio.run(migrate(Settings().database_url))
    for schema, names in applied.items():
        print(f"{schema}: {', '.join(names) if names else 'up to date'}")
    return 0


def _cmd_keys_new(args: argparse.Namespace) -> int:
    from shared.auth import KeysFileError, new_key

    try:
        key, line = new_key(args.scope)
    except KeysFileError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"key (shown once, store it now): {key}")
    print("add to the API_KEYS_FILE:")
    print(line, end="")
    return 0


def _cmd_dev(args: argparse.Namespace) -> int:
    from shared.devtools.dev import run_dev

    return run_dev(args)


def _cmd_simulate(args: argparse.Namespace) -> int:
    from shared.devtools.simulate import run_simulate_cli

    return run_simulate_cli(args)


def _interrupt(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt


def _cmd_bench(args: argparse.Namespace) -> int:
    """SIGTERM stops a bench as Ctrl-C does: its `finally` blocks stop the services, Kafka and PostgreSQL it
    started (they also die with it if it is killed outright: PR_SET_PDEATHSIG)."""
    import signal

    signal.signal(signal.SIGTERM, _interrupt)
    try:
        return _run_bench(args)
    except KeyboardInterrupt:
        print("bench interrupted: what it started is stopped", file=sys.stderr)
        return 130


def _run_bench(args: argparse.Namespace) -> int:
    if args.target == "reports":
        from shared.devtools.bench_reports import run_reports_bench

        return run_reports_bench(args)
    if args.target == "pipeline":
        from shared.devtools.bench_pipeline import run_pipeline_bench

        return run_pipeline_bench(args)
    if args.target == "sla":
        from shared.devtools.bench_sla import run_sla_bench

        return run_sla_bench(args)
    from shared.devtools.bench import run_bench_cli, run_routing_bench

    return run_routing_bench(args) if args.target == "routing" else run_bench_cli(args)


def _cmd_dlq_replay(args: argparse.Namespace) -> int:
    from shared.devtools.dlq import run_replay_cli

    return run_replay_cli(args)


def _cmd_ledger_import(args: argparse.Namespace) -> int:
    from shared.devtools.ledger import run_ledger_import

    return run_ledger_import(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="complaints", description="营商环境 complaints: the closed loop, as services."
    )
    sub = parser.add_subparsers(dest="command", required=True)

    dev = sub.add_parser("dev", help="the whole system on this machine (own Kafka and PostgreSQL unless told)")
    dev.add_argument("--simulate", type=float, default=0.0, metavar="N", help="feed N complaints a second")
    dev.add_argument("--kafka-port", type=int, default=9092)
    dev.add_argument("--brokers", type=int, choices=(1, 3), default=1, help="3: a KRaft cluster (replication 3)")
    dev.add_argument("--port-base", type=int, default=8080, help="services listen on N+1 … N+4 (default 8080)")
    dev.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="keep Kafka, PostgreSQL and the keys here (default .run); one stack each",
    )
    dev.add_argument("--new-keys", action="store_true", help="replace the keys kept in the data directory")
    dev.set_defaults(func=_cmd_dev)

    run = sub.add_parser("run", help="run one service")
    run.add_argument("service", choices=SERVICES)
    run.add_argument("--port", type=int, default=None)
    run.add_argument("--host", default=None)
    run.set_defaults(func=_cmd_run)

    sim = sub.add_parser("simulate", help="realistic traffic on all channels")
    sim.add_argument("--rate", type=float, default=5.0, help="complaints a second")
    sim.add_argument("--count", type=int, default=0, help="stop after this many (0: until Ctrl-C)")
    sim.add_argument("--duration", type=float, default=0.0, help="stop after this many seconds")
    sim.add_argument("--duplicates", type=float, default=0.05, help="share of repeated messages")
    sim.add_argument("--bad", type=float, default=0.03, help="share of bad messages")
    sim.add_argument("--http-share", type=float, default=0.1, help="share sent over HTTP intake")
    sim.add_argument("--intake-url", default=os.environ.get("INTAKE_URL", "http://127.0.0.1:8081"))
    sim.add_argument(
        "--channel-key",
        action="append",
        metavar="CHANNEL=KEY",
        help="a channel key, to send --http-share of that channel's traffic over HTTP intake",
    )
    sim.add_argument("--seed", type=int, default=None)
    sim.add_argument(
        "--method",
        type=float,
        default=0.15,
        metavar="SHARE",
        help="share of portal submissions, visit records and survey responses (contract 10); 0: none",
    )
    sim.add_argument(
        "--no-plant",
        dest="plant",
        action="store_false",
        help="do not plant the rising series (the early warning) and the overdue history at the start",
    )
    sim.add_argument(
        "--no-departments",
        dest="departments",
        action="store_false",
        help="only raw traffic: do not also play the department systems and the callbacks",
    )
    sim.add_argument(
        "--speed",
        type=float,
        default=20.0,
        help="how much faster than real life departments act (20: a case closes in about a minute)",
    )
    sim.set_defaults(func=_cmd_simulate)

    bench = sub.add_parser("bench", help="measure throughput and latency")
    bench.add_argument(
        "target", choices=["intake", "routing", "sla", "reports", "pipeline"], nargs="?", default="intake"
    )
    bench.add_argument("--count", type=int, default=20000, help="intake: raw messages in the backlog phase")
    bench.add_argument("--rate", type=float, default=1000.0, help="intake, routing: rate of the latency phase")
    bench.add_argument("--seconds", type=float, default=10.0, help="intake, routing, pipeline: latency phase length")
    bench.add_argument("--total", type=int, default=1_000_000, help="sla: pending deadlines loaded")
    bench.add_argument("--due", type=int, default=10_000, help="sla: deadlines falling due at the same instant")
    bench.add_argument("--batch", type=int, default=1000, help="sla: deadlines claimed per scheduler round")
    bench.add_argument("--parallel", type=int, default=2, help="sla: scheduler rounds at once during a backlog")
    bench.add_argument("--also", default="", help="sla: more settings to try on the same table, e.g. 2000x3")
    bench.add_argument("--backlog", type=int, default=20_000, help="pipeline: raw messages in the backlog drain")
    bench.add_argument("--rates", default="100,500,1000", help="pipeline: fixed rates of the latency phases")
    bench.add_argument("--routing-replicas", type=int, default=1, help="pipeline: routing processes")
    bench.add_argument("--timeout", type=float, default=300.0, help="pipeline: longest wait for the drain")
    bench.add_argument("--profile", type=Path, default=None, metavar="DIR", help="pipeline: py-spy the drain")
    bench.add_argument("--json", type=Path, default=None, metavar="FILE", help="pipeline: write the figures here")
    bench.set_defaults(func=_cmd_bench)

    mig = sub.add_parser("migrate", help="apply the SQL migrations of every service")
    mig.set_defaults(func=_cmd_migrate)

    keys = sub.add_parser("keys", help="API keys")
    keys_sub = keys.add_subparsers(dest="keys_command", required=True)
    new = keys_sub.add_parser("new", help="print a new random key and its keys-file line")
    new.add_argument("--scope", required=True, help="channel:<name> | department:<code> | reports | admin")
    new.set_defaults(func=_cmd_keys_new)

    ledger = sub.add_parser("ledger", help="the rectification ledger (整改台账)")
    ledger_sub = ledger.add_subparsers(dest="ledger_command", required=True)
    ledger_import = ledger_sub.add_parser("import", help="import a CSV or XLSX ledger file, all or nothing")
    ledger_import.add_argument("file", help="a .csv (UTF-8) or .xlsx file whose header names the fields")
    ledger_import.set_defaults(func=_cmd_ledger_import)

    dlq = sub.add_parser("dlq", help="dead letters")
    dlq_sub = dlq.add_subparsers(dest="dlq_command", required=True)
    replay = dlq_sub.add_parser("replay", help="send dead letters back to their source topic")
    replay.add_argument("--source-topic", default=None, help="only those from this topic")
    replay.add_argument("--error-type", default=None, help="only those with this error_type")
    replay.add_argument("--dry-run", action="store_true")
    replay.set_defaults(func=_cmd_dlq_replay)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
