#!/usr/bin/env python3
"""Read a topic from the beginning with kafka-python and print its records as JSON lines.

The end-to-end tests use it to inspect the dead-letter topic independently of the tracker:

    python3 tests/python/consume.py --brokers 127.0.0.1:9092 --topic saga.tracker.dlq \
        --min-records 2 --timeout 30

Partitions are assigned manually (no consumer group, nothing committed), so reading never
disturbs the tracker's own group. Stops once at least --min-records records were read and the
topic has been drained, or when --timeout seconds have passed; exits non-zero if fewer than
--min-records were read by then. Each output line:

    {"partition": 0, "offset": 3, "key": "...", "value": "...", "value_base64": "...",
     "headers": {"dlq.reason": "not_json", ...}}

`key`/`value` are text when the bytes are UTF-8 (else null); `value_base64` is always given.
"""

import argparse
import base64
import json
import sys
import time


def parse_args():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--brokers", required=True, help="bootstrap servers, comma separated")
    p.add_argument("--topic", required=True)
    p.add_argument("--min-records", type=int, default=1)
    p.add_argument("--timeout", type=float, default=30.0, help="overall deadline in seconds")
    p.add_argument("--api-version", default=None, help="Kafka protocol version to assume, e.g. 2.5")
    return p.parse_args()


def text_or_none(b):
    if b is None:
        return None
    try:
        return b.decode("utf-8")
    except UnicodeDecodeError:
        return None


def main():
    args = parse_args()
    try:
        from kafka import KafkaConsumer, TopicPartition
    except ImportError:
        raise SystemExit("consume.py: kafka-python is not installed (run scripts/ensure-python.sh)")

    config = dict(
        bootstrap_servers=args.brokers.split(","),
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        client_id="saga-tracker-tests-consume",
        request_timeout_ms=30000,
    )
    if args.api_version:
        config["api_version"] = tuple(int(x) for x in args.api_version.split("."))
    consumer = KafkaConsumer(**config)
    deadline = time.monotonic() + args.timeout
    try:
        partitions = None
        while partitions is None and time.monotonic() < deadline:
            partitions = consumer.partitions_for_topic(args.topic)
            if partitions is None:
                time.sleep(0.5)
        if not partitions:
            print(f"consume.py: topic {args.topic} not found", file=sys.stderr)
            return 1
        tps = [TopicPartition(args.topic, p) for p in sorted(partitions)]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)

        read = 0
        while time.monotonic() < deadline:
            batch = consumer.poll(timeout_ms=500)
            for tp, messages in batch.items():
                for m in messages:
                    read += 1
                    headers = {k: text_or_none(v) for k, v in (m.headers or [])}
                    print(
                        json.dumps(
                            {
                                "partition": m.partition,
                                "offset": m.offset,
                                "key": text_or_none(m.key),
                                "value": text_or_none(m.value),
                                "value_base64": base64.b64encode(m.value or b"").decode("ascii"),
                                "headers": headers,
                            }
                        ),
                        flush=True,
                    )
            if not batch and read >= args.min_records:
                break
    finally:
        consumer.close()
    print(f"consume.py: read {read} record(s) from {args.topic}", file=sys.stderr)
    if read < args.min_records:
        print(f"consume.py: expected at least {args.min_records}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
