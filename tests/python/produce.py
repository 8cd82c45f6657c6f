#!/usr/bin/env python3
"""Produce records to Kafka with kafka-python, an independent (non-librdkafka) client.

The end-to-end tests use it to prove that any Kafka client can feed the tracker, and to send
what the SDK never would: legacy-shape events and poison messages.

Input is JSON lines (from FILE or stdin), one record per line:

    {"key": "order-1", "value": {"schemaVersion": 1, ...}}      value sent as compact JSON
    {"key": "order-1", "value": "not json at all"}             a string is sent verbatim
    {"key": null, "raw_base64": "//79"}                          exact bytes (e.g. not UTF-8)
    {"key": "k", "value": {...}, "headers": {"traceparent": "00-..."}}

Every record is sent with acks=all and waited for; the first failure ends the run with a
non-zero exit status. Prints one line per record: partition and offset.

    python3 tests/python/produce.py --brokers 127.0.0.1:9092 --topic saga.tracker records.jsonl
"""

import argparse
import base64
import json
import sys


def parse_args():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--brokers", required=True, help="bootstrap servers, comma separated")
    p.add_argument("--topic", required=True)
    p.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for each ack")
    p.add_argument(
        "--api-version",
        default=None,
        help="Kafka protocol version to assume, e.g. 2.5 (default: ask the broker)",
    )
    p.add_argument("file", nargs="?", default="-", help="JSON-lines file, or - for stdin")
    return p.parse_args()


def encode_value(record):
    if record.get("raw_base64") is not None:
        return base64.b64decode(record["raw_base64"])
    if "value" not in record:
        raise ValueError("record needs `value` or `raw_base64`")
    value = record["value"]
    if value is None:
        return None
    if isinstance(value, str):
        return value.encode("utf-8")
    return json.dumps(value, separators=(",", ":")).encode("utf-8")


def encode_key(record):
    key = record.get("key")
    if key is None:
        return None
    if not isinstance(key, str):
        key = json.dumps(key)
    return key.encode("utf-8")


def encode_headers(record):
    headers = record.get("headers") or {}
    return [(str(k), None if v is None else str(v).encode("utf-8")) for k, v in headers.items()]


def read_records(path):
    stream = sys.stdin if path == "-" else open(path, encoding="utf-8")
    try:
        for lineno, line in enumerate(stream, start=1):
            line = line.strip()
            if not line:
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise SystemExit(f"produce.py: line {lineno}: not a JSON record: {e}")
            if not isinstance(record, dict):
                raise SystemExit(f"produce.py: line {lineno}: expected a JSON object")
            yield lineno, record
    finally:
        if stream is not sys.stdin:
            stream.close()


def main():
    args = parse_args()
    try:
        from kafka import KafkaProducer
    except ImportError:
        raise SystemExit("produce.py: kafka-python is not installed (run scripts/ensure-python.sh)")

    config = dict(
        bootstrap_servers=args.brokers.split(","),
        acks="all",
        retries=5,
        linger_ms=0,
        request_timeout_ms=int(args.timeout * 1000),
        max_block_ms=int(args.timeout * 1000),
        client_id="saga-tracker-tests-produce",
    )
    if args.api_version:
        config["api_version"] = tuple(int(x) for x in args.api_version.split("."))
    producer = KafkaProducer(**config)
    sent = 0
    try:
        for lineno, record in read_records(args.file):
            try:
                future = producer.send(
                    args.topic,
                    key=encode_key(record),
                    value=encode_value(record),
                    headers=encode_headers(record),
                )
                meta = future.get(timeout=args.timeout)
            except Exception as e:  # noqa: BLE001 - any failure must fail the run
                print(f"produce.py: line {lineno}: send failed: {type(e).__name__}: {e}", file=sys.stderr)
                return 1
            sent += 1
            print(json.dumps({"line": lineno, "partition": meta.partition, "offset": meta.offset}))
        producer.flush(timeout=args.timeout)
    finally:
        producer.close(timeout=args.timeout)
    print(f"produce.py: {sent} record(s) acknowledged by {args.brokers} on {args.topic}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
