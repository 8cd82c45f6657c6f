"""A rotel trace processor that writes every span it receives to a file, as JSON lines.

rotel (PyPI `rotel`, a real OTLP receiver) runs it with `--otlp-with-trace-processor`; the
end-to-end tests read the file through tests/src/otel.rs. The file is named by the
ROTEL_DUMP_FILE environment variable of the rotel process. Each line is one span:

    {"name": "...", "kind": 1, "trace_id": "<32 hex>", "span_id": "<16 hex>",
     "parent_span_id": "<16 hex>" or "", "attributes": {...}, "resource": {...},
     "scope": "...", "links": [{"trace_id": ..., "span_id": ..., "attributes": {...}}],
     "status_code": 0}

Nothing is changed: the spans go on to rotel's exporter (the blackhole in the tests).
"""

import json
import os


def _value(any_value):
    if any_value is None:
        return None
    v = getattr(any_value, "value", any_value)
    if isinstance(v, (str, int, float, bool)) or v is None:
        return v
    if isinstance(v, bytes):
        return v.hex()
    values = getattr(v, "values", None)
    if values is not None:
        items = list(values)
        if items and hasattr(items[0], "key"):
            return _attributes(items)
        return [_value(x) for x in items]
    return str(v)


def _attributes(key_values):
    return {kv.key: _value(kv.value) for kv in (key_values or [])}


def _hex(b):
    if b is None:
        return ""
    if isinstance(b, (bytes, bytearray)):
        return bytes(b).hex()
    return str(b)


def process_spans(resource_spans):
    resource = getattr(resource_spans, "resource", None)
    resource_attrs = _attributes(resource.attributes) if resource is not None else {}
    lines = []
    for scope_spans in resource_spans.scope_spans:
        scope = getattr(scope_spans, "scope", None)
        scope_name = getattr(scope, "name", "") if scope is not None else ""
        for span in scope_spans.spans:
            status = getattr(span, "status", None)
            lines.append(
                json.dumps(
                    {
                        "name": span.name,
                        "kind": int(getattr(span, "kind", 0) or 0),
                        "trace_id": _hex(span.trace_id),
                        "span_id": _hex(span.span_id),
                        "parent_span_id": _hex(span.parent_span_id),
                        "attributes": _attributes(span.attributes),
                        "resource": resource_attrs,
                        "scope": scope_name,
                        "links": [
                            {
                                "trace_id": _hex(link.trace_id),
                                "span_id": _hex(link.span_id),
                                "attributes": _attributes(link.attributes),
                            }
                            for link in (span.links or [])
                        ],
                        "status_code": int(getattr(status, "code", 0) or 0) if status is not None else 0,
                    }
                )
            )
    if lines:
        with open(os.environ["ROTEL_DUMP_FILE"], "a", encoding="utf-8") as f:
            f.write("\n".join(lines) + "\n")
