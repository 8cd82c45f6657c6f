#!/usr/bin/env python3
"""Produce Confluent-framed Avro records to Kafka, the way the earlier design's emitters do.

An encoder independent of the tracker: fastavro writes the Avro binary, kafka-python sends it,
and the frame is built exactly as Confluent's KafkaAvroSerializer builds it — magic byte 0,
the schema id as 4 bytes big-endian, then the schemaless Avro datum:

    b"\\x00" + struct.pack(">I", schema_id) + avro_bytes

Input is JSON lines (from FILE or stdin), one record per line:

    {"key": "order-1", "avro": {"schema_id": 7, "schema": {...avsc...}, "record": {...}}}
    {"key": "order-1", "json": {"sagaId": "order-1", ...}}     a JSON event (mixed topics)
    {"key": "order-1", "raw_base64": "AAAAAAf/"}                 exact bytes (garbage)

`schema` is the writer schema (a parsed .avsc) or a path to a .avsc file. Enum values are
their symbols, timestamp-millis fields epoch milliseconds, the `metadata` union null or a
string. Every record is sent with acks=all and waited for; the first failure ends the run
with a non-zero exit status. Prints one line per record: partition and offset.

    python3 tests/python/produce_avro.py --brokers 127.0.0.1:9092 --topic saga.tracker in.jsonl
"""

import argparse
import base64
import io
import json
import struct
import sys

MAGIC_BYTE = b"\x00"


def parse_args():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--brokers", required=True, help="bootstrap servers, comma separated")
    p.add_argument("--topic", required=True)
    p.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for each ack")
    p.add_argument("file", nargs="?", default="-", help="JSON-lines file, or - for stdin")
    return p.parse_args()


def confluent_frame(schema_id, avro_bytes):
    """What KafkaAvroSerializer writes: magic byte, 4-byte big-endian id, the datum."""
    return MAGIC_BYTE + struct.pack(">I", schema_id) + avro_bytes


class Encoder:
    """Parses each writer schema once and encodes records with fastavro."""

    def __init__(self, fastavro):
        self.fastavro = fastavro
        self.parsed = {}

    def schema(self, spec):
        if isinstance(spec, str):
            with open(spec, encoding="utf-8") as f:
                spec = json.load(f)
        key = json.dumps(spec, sort_keys=True)
        if key not in self.parsed:
            self.parsed[key] = self.fastavro.parse_schema(spec)
        return self.parsed[key]

    def encode(self, avro):
        buf = io.BytesIO()
        self.fastavro.schemaless_writer(buf, self.schema(avro["schema"]), avro["record"])
        return confluent_frame(int(avro["schema_id"]), buf.getvalue())


def encode_value(record, encoder):
    if record.get("raw_base64") is not None:
        return base64.b64decode(record["raw_base64"])
    if "avro" in record:
        return encoder.encode(record["avro"])
    if "json" in record:
        return json.dumps(record["json"], separators=(",", ":")).encode("utf-8")
    raise ValueError("record needs `avro`, `json` or `raw_base64`")


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
                raise SystemExit(f"produce_avro.py: line {lineno}: not a JSON record: {e}")
            if not isinstance(record, dict):
                raise SystemExit(f"produce_avro.py: line {lineno}: expected a JSON object")
            yield lineno, record
    finally:
        if stream is not sys.stdin:
            stream.close()


def main():
    args = parse_args()
    try:
        import fastavro
        from kafka import KafkaProducer
    except ImportError as e:
        raise SystemExit(f"produce_avro.py: {e} (run scripts/ensure-python.sh)")

    encoder = Encoder(fastavro)
    producer = KafkaProducer(
        bootstrap_servers=args.brokers.split(","),
        acks="all",
        retries=5,
        linger_ms=0,
        request_timeout_ms=int(args.timeout * 1000),
        max_block_ms=int(args.timeout * 1000),
        client_id="saga-tracker-tests-produce-avro",
    )
    sent = 0
    try:
        for lineno, record in read_records(args.file):
            try:
                key = record.get("key")
                future = producer.send(
                    args.topic,
                    key=None if key is None else str(key).encode("utf-8"),
                    value=encode_value(record, encoder),
                )
                meta = future.get(timeout=args.timeout)
            except Exception as e:  # noqa: BLE001 - any failure must fail the run
                print(f"produce_avro.py: line {lineno}: {type(e).__name__}: {e}", file=sys.stderr)
                return 1
            sent += 1
            print(json.dumps({"line": lineno, "partition": meta.partition, "offset": meta.offset}))
        producer.flush(timeout=args.timeout)
    finally:
        producer.close(timeout=args.timeout)
    print(f"produce_avro.py: {sent} record(s) acknowledged by {args.brokers} on {args.topic}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
