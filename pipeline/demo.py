"""The two steps of ``make demo`` that are not user commands: topics up front, and what next.

``python -m pipeline.demo topics BOOTSTRAP NAME...`` creates the demo's topics before the
producer and the stream touch them: kafka-python logs a topic it has to wait for while the
broker auto-creates it as ``ERROR ... Topic ... not found``, which is a normal event and
should not read like a failure in a first run.

``python -m pipeline.demo next BOOTSTRAP`` prints the commands to try after the demo (over
the demo's own lake and truth file) and how to stop the broker the demo left running.
"""

from __future__ import annotations

import argparse
import re
import sys

DEMO_DIR = "data/demo"
# `make demo` passes `$(python -m pipeline.localinfra.kafka status --bootstrap)`: empty when the broker
# went away, and then the first topic name would be taken for the address.
_BOOTSTRAP = re.compile(r"[^\s:/]+:\d{1,5}")
CONNECT_TIMEOUT_S = 5.0  # as kafka.connect_timeout_s


def next_steps(bootstrap: str, demo_dir: str = DEMO_DIR) -> str:
    """The commands to try next (one per line, so a narrow terminal does not wrap them mid-path)."""
    jobs = f"{demo_dir}/jobs"
    steps = [
        (f"misuse-monitor spark all --lake {demo_dir}/lake --out {jobs}",
         "Spark batch jobs on the demo's lake: daily aggregates, offenders, campaigns"),
        (f"misuse-monitor report {jobs} --lake {demo_dir}/lake --labels {demo_dir}/truth.jsonl -o {demo_dir}/report.html",
         "one self-contained HTML page: volumes, accuracy, offenders, campaigns, versions"),
        ("misuse-monitor alerts test",
         "check the alert rules (examples/alert-rules.yaml); add `alerts` to sinks to fire them (docs/alerting.md)"),
    ]
    lines = ["", "Next, try (after `source .venv/bin/activate`):"]
    for command, what in steps:
        lines += [f"  {command}", f"      {what}"]
    if _BOOTSTRAP.fullmatch(bootstrap):
        lines += ["", f"Kafka is still running at {bootstrap}: `make kafka-down` stops it."]
    else:
        lines += ["", "Kafka is not running any more (`make kafka-up` starts it)."]
    return "\n".join(lines)


def create_topics(bootstrap: str, names: list[str]) -> int:
    """Create the demo's topics; a missing or unreachable broker is one line and exit 2 or 5."""
    from kafka.errors import KafkaError

    from pipeline.localinfra.base import port_is_open
    from pipeline.localinfra.kafka import create_topic

    if not _BOOTSTRAP.fullmatch(bootstrap):
        print(f"demo: {bootstrap!r} is not a Kafka address (host:port): is Kafka running? "
              "(`python -m pipeline.localinfra.kafka status`)", file=sys.stderr)
        return 2
    host, port = bootstrap.rsplit(":", 1)
    if not port_is_open(host, int(port), CONNECT_TIMEOUT_S):
        print(f"demo: Kafka at {bootstrap} is not reachable: is it running? "
              "(`python -m pipeline.localinfra.kafka status`)", file=sys.stderr)
        return 5
    for name in names:
        try:
            create_topic(bootstrap, name, partitions=3)
        except ValueError:
            pass  # it exists with another partition count: fine for the demo
        except KafkaError as exc:
            print(f"demo: creating topic {name!r} at {bootstrap} failed: {exc}", file=sys.stderr)
            return 5
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.demo", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    topics = sub.add_parser("topics", help="create topics (3 partitions) unless they exist")
    topics.add_argument("bootstrap")
    topics.add_argument("names", nargs="+")
    nxt = sub.add_parser("next", help="print the next commands to try and how to stop Kafka")
    nxt.add_argument("bootstrap", nargs="?", default="", help="empty: Kafka is not running any more")
    nxt.add_argument("--demo-dir", default=DEMO_DIR)
    args = parser.parse_args(argv)
    if args.command == "topics":
        return create_topics(args.bootstrap, args.names)
    print(next_steps(args.bootstrap, args.demo_dir))
    return 0


if __name__ == "__main__":
    sys.exit(main())
