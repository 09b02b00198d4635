"""The `learnstream` command (docs/ARCHITECTURE.md, "Command line")."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import logging
import secrets
import signal
import sys
from pathlib import Path

from learnstream.config import FAMILIES, ConfigError, Settings, load_settings
from learnstream.extras import REPORT
from ops.broker import LocalBroker, broker_command
from ops.cli_errors import CommandError, package_version, run_command
from ops.logs import setup_logging

log = logging.getLogger("learnstream")


def _with_bootstrap(settings: Settings, *, start_local: bool) -> Settings:
    """KAFKA_BOOTSTRAP_SERVERS when set; else the local broker (started if asked, else it must be running)."""
    if settings.bootstrap_servers:
        return settings
    broker = LocalBroker(settings.broker_dir)
    address = broker.start() if start_local else broker.status()
    if address is None:
        raise ConfigError("the local broker is not running: `learnstream broker start` (or set KAFKA_BOOTSTRAP_SERVERS)")
    return dataclasses.replace(settings, bootstrap_servers=address)


# ---- commands ----------------------------------------------------------------------------------------------


def cmd_broker(settings: Settings, args: argparse.Namespace) -> int:
    return broker_command(args.action, settings.broker_dir, nodes=args.nodes, node=args.node, as_json=args.json)


def cmd_up(settings: Settings, args: argparse.Namespace) -> int:
    from ops.up import Pipeline, parse_roles

    settings = _with_bootstrap(settings, start_local=True)
    if args.port is not None:
        settings = dataclasses.replace(settings, http_port=args.port)
    pipeline = Pipeline(settings, roles=parse_roles(args.roles))

    async def main() -> None:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        stopper = asyncio.create_task(stop.wait())
        # Starting can wait for the broker: a signal meanwhile ends the wait (start() then stops what it started).
        starting = asyncio.create_task(pipeline.start())
        await asyncio.wait({starting, stopper}, return_when=asyncio.FIRST_COMPLETED)
        if not starting.done():
            starting.cancel()
        try:
            await starting
        except asyncio.CancelledError:
            log.info("learnstream stopped before it started")
            return
        try:
            waiter = asyncio.create_task(pipeline.wait())
            done, pending = await asyncio.wait({waiter, stopper}, return_when=asyncio.FIRST_COMPLETED)
            for task in pending:
                task.cancel()
            for task in done:
                task.result()
        finally:
            await pipeline.stop()
        log.info("learnstream stopped")

    asyncio.run(main())
    return 0


def cmd_produce(settings: Settings, args: argparse.Namespace) -> int:
    from producers.jsonl import produce_lines
    from producers.sdk import EventProducer

    settings = _with_bootstrap(settings, start_local=False)
    lines = sys.stdin.buffer if args.file == "-" else Path(args.file).open("rb")

    async def main():
        async with EventProducer(settings) as events:
            return await produce_lines(events, lines, kind=args.kind, max_bytes=settings.max_event_bytes)

    report = asyncio.run(main())
    for error in report.errors:
        print(f"line {error['line']}: {error['reason']}"
              + (f" at {error['field']}" if error["field"] else "")
              + (f": {error['rule']}" if error["rule"] else ""), file=sys.stderr)
    print(f"sent {report.sent}, rejected {len(report.errors)}", file=sys.stderr)
    return report.exit_code


def cmd_anonymize(settings: Settings, args: argparse.Namespace) -> int:
    import orjson

    from consumers.privacy import Anonymizer

    if settings.pseudonym_key:
        key = settings.pseudonym_key.reveal().encode()
    else:
        key = secrets.token_bytes(32)
        print("learnstream anonymize: no LEARNSTREAM_PSEUDONYM_KEY; using a random key for this run "
              "(pseudonyms and placeholders will not match any other run)", file=sys.stderr)
    anonymizer = Anonymizer(key=key, ner_model=settings.ner_model, max_event_bytes=settings.max_event_bytes)
    out = sys.stdout.buffer
    batch: list[bytes] = []

    def flush() -> None:
        for outcome in anonymizer.process("chat", batch):
            if outcome.kind == "invalid":
                line = {"error": str(outcome.error)}
            elif outcome.kind == "skip":
                line = {"skipped": outcome.record["reason"]}
            else:
                line = outcome.record
            out.write(orjson.dumps(line) + b"\n")
        out.flush()
        batch.clear()

    for raw in sys.stdin.buffer:
        batch.append(raw.rstrip(b"\r\n"))
        if len(batch) >= 256:
            flush()
    flush()
    return 0


def cmd_train(settings: Settings, args: argparse.Namespace) -> int:
    from ops.manual_train import train_now

    settings = _with_bootstrap(settings, start_local=False)
    return train_now(settings, args.family, from_scratch=args.from_scratch)


def cmd_status(settings: Settings, args: argparse.Namespace) -> int:
    from ops.status_text import print_status

    return print_status(settings, as_json=args.json)


def cmd_topics(settings: Settings, args: argparse.Namespace) -> int:
    from ops.cluster_view import describe_topics, print_rows

    rows = asyncio.run(describe_topics(_with_bootstrap(settings, start_local=False)))
    print_rows(rows, as_json=args.json, key="topics")
    return 0


def cmd_lag(settings: Settings, args: argparse.Namespace) -> int:
    from ops.cluster_view import consumer_lag, print_rows

    rows = asyncio.run(consumer_lag(_with_bootstrap(settings, start_local=False)))
    print_rows(rows, as_json=args.json, key="lag")
    return 0


def cmd_replay(settings: Settings, args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from consumers.replay import replay

    settings = _with_bootstrap(settings, start_local=False)
    # Shown after a second, so that a replay that cannot reach the broker prints only its one-line error.
    with tqdm(unit=" records", desc="replay", file=sys.stderr, delay=1.0) as bar:

        def progress(count: int, rate: float) -> None:
            bar.update(count - bar.n)
            bar.set_postfix(rate=f"{rate:,.0f}/s")

        result = asyncio.run(replay(settings, progress=progress))
    print(json.dumps({**dataclasses.asdict(result), "store": str(settings.store_path)}))
    return 0


def cmd_dlq(settings: Settings, args: argparse.Namespace) -> int:
    from consumers import dlq
    from consumers.store_writer import DLQ_TOPICS
    from learnstream import kafka

    settings = _with_bootstrap(settings, start_local=False)
    names = [args.topic] if args.topic else list(DLQ_TOPICS)
    names = [n if n.endswith(".dlq") else f"{n}.dlq" for n in names]

    async def main() -> int:
        if args.topic and not await kafka.topic_partitions(settings, names):
            raise CommandError(f"unknown topic {names[0]} (the DLQs: {', '.join(DLQ_TOPICS)})")
        total = 0
        for name in names:
            if args.action == "list":
                async for failure in dlq.read(settings, name, reason=args.reason, include_redriven=args.all):
                    shown = {"topic": name, **failure.entry}
                    if args.all:
                        shown["outstanding"] = failure.outstanding
                    print(json.dumps(shown, ensure_ascii=False))
                    total += 1
            else:
                total += await dlq.redrive(settings, name, reason=args.reason)
        return total

    total = asyncio.run(main())
    if args.action == "redrive":
        print(f"redriven {total}", file=sys.stderr)
    return 0


def cmd_models(settings: Settings, args: argparse.Namespace) -> int:
    from ops.models import list_models, rollback_model

    if args.action == "list":
        return list_models(settings, args.family)
    return rollback_model(_with_bootstrap(settings, start_local=False), args.family, args.version,
                          allow_erased=args.allow_erased)


def cmd_report(settings: Settings, args: argparse.Namespace) -> int:
    REPORT.require()
    from ops.report import write_report

    png, page = write_report(settings, Path(args.out) if args.out else settings.data_dir / "report")
    print(f"{png}\n{page}")
    return 0


def cmd_demo(settings: Settings, args: argparse.Namespace) -> int:
    from ops.demo import run_demo

    return run_demo(settings)


# ---- parser ------------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="learnstream", description=__doc__)
    parser.add_argument("--config", help="TOML settings file (or LEARNSTREAM_CONFIG)")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("--version", action="version", version=f"%(prog)s {package_version()}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("broker", help="the local Apache Kafka (one node, or a cluster with --nodes)")
    p.add_argument("action", choices=("start", "stop", "status"))
    p.add_argument("--nodes", type=int, help="start: the node count, fixed on the first start (default 1)")
    p.add_argument("--node", type=int, help="stop: only this node id")
    p.add_argument("--json", action="store_true", help='status: {"nodes": [{"id", "address", "pid", "running"}]}')
    p.set_defaults(func=cmd_broker)

    p = sub.add_parser("up", help="run all services (or --roles) until stopped")
    p.add_argument("--roles", help="comma-separated: anonymizer,store,trainer,serving")
    p.add_argument("--port", type=int, help="serving's HTTP port (LEARNSTREAM_HTTP_PORT)")
    p.set_defaults(func=cmd_up)

    p = sub.add_parser("produce", help="validate and publish JSON-lines events")
    p.add_argument("kind", choices=("chat", "image", "erasure"))
    p.add_argument("file", help="a JSON-lines file, or - for stdin")
    p.set_defaults(func=cmd_produce)

    p = sub.add_parser("anonymize", help="chat.v1 JSON lines on stdin -> anonymized JSON lines on stdout")
    p.set_defaults(func=cmd_anonymize)

    p = sub.add_parser("train", help="a training run now (threshold ignored)")
    p.add_argument("--family", required=True, choices=FAMILIES)
    p.add_argument("--from-scratch", action="store_true", help="from the base model on every stored sample")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("status", help="the training status")
    p.add_argument("--json", action="store_true", help="print /api/ai/training-status")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("topics", help="learnstream's topics: partitions, replication, in-sync replicas, retention")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_topics)

    p = sub.add_parser("lag", help="consumer lag per group and partition")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_lag)

    p = sub.add_parser("replay", help="rebuild the store from the *.anon topics")
    p.set_defaults(func=cmd_replay)

    p = sub.add_parser("dlq", help="dead-letter topics")
    p.add_argument("action", choices=("list", "redrive"))
    p.add_argument("--topic", help="e.g. chat.raw.dlq (default: every DLQ)")
    p.add_argument("--reason", help="only entries with this reason")
    p.add_argument("--all", action="store_true",
                   help="list also entries redriven since (each with \"outstanding\"); redrive sends only outstanding ones")
    p.set_defaults(func=cmd_dlq)

    p = sub.add_parser("models", help="registry versions and rollback")
    models = p.add_subparsers(dest="action", required=True)
    q = models.add_parser("list")
    q.add_argument("--family", choices=FAMILIES)
    q = models.add_parser("rollback")
    q.add_argument("family", choices=FAMILIES)
    q.add_argument("version", type=int)
    q.add_argument("--allow-erased", metavar="REASON",
                   help="roll back even to a version that holds erased data; the reason (no names: a ticket, "
                        "a legal hold) goes into the promotion history")
    p.set_defaults(func=cmd_models)

    p = sub.add_parser("report", help="a PNG plot of the training runs and a short HTML summary")
    p.add_argument("--out", help="output folder (default: $LEARNSTREAM_DATA_DIR/report)")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("demo", help="the whole loop on the local broker with sample events, then exit")
    p.set_defaults(func=cmd_demo)
    return parser


# Commands that run until stopped: their operators need the clients' own retry errors in the log.
SERVICES = {"up", "demo"}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)  # usage errors: argparse's message and exit code 2
    return run_command(lambda: _run(args))


def _run(args: argparse.Namespace) -> int:
    settings = load_settings(args.config)
    setup_logging(verbose=args.verbose, json_logs=settings.json_logs, one_shot=args.command not in SERVICES)
    return args.func(settings, args)


if __name__ == "__main__":
    sys.exit(main())
