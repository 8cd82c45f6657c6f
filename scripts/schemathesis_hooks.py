"""schemathesis hooks for scripts/schemathesis.sh: the two search rules OpenAPI cannot state.

The OpenAPI document gives every query and path parameter the limits the tracker enforces
(lengths, patterns, ranges, enums), so a schema-valid value of any one parameter is always
accepted. Two rules tie parameters together or depend on server state, and the document can
only say them in prose (they are in the parameter descriptions):

  1. a time window must not end before it starts: `startedBefore` >= `startedAfter`, and the
     same for `updated…` (a reversed window is refused with a 400 naming the `…Before`
     parameter, because it is almost always two swapped parameters, not a wish for nothing);
  2. a `cursor` is a `nextCursor` the API returned, for the same `sort`.

This hook makes the *positive* cases (those schemathesis generates as valid) obey them: a
reversed window is put the right way round, and a cursor is replaced by a real one, built
the way the tracker builds them, for the case's sort and from the generated text, so the
cursor path is exercised rather than filtered away. Negative cases are left untouched: they
are invalid by construction and must still be refused.
"""

import base64
import json
import zlib
from datetime import datetime

import schemathesis

WINDOWS = (("startedAfter", "startedBefore"), ("updatedAfter", "updatedBefore"))
SORTS = ("startedAt", "updatedAt")


def _time(value):
    try:
        return datetime.fromisoformat(str(value).replace("z", "Z"))
    except ValueError:
        return None


def _cursor(sort, seed):
    """A cursor as the tracker issues it: base64url (no padding) of a versioned JSON object
    holding the sort, a position in microseconds and a saga id."""
    body = {"v": 1, "t": zlib.crc32(seed.encode()) * 1000, "id": seed, "s": sort}
    raw = json.dumps(body, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


@schemathesis.hook
def map_case(context, case):
    meta = case.meta
    query = case.query
    if meta is None or not meta.generation.mode.is_positive or not isinstance(query, dict):
        return case
    for after_name, before_name in WINDOWS:
        if after_name in query and before_name in query:
            after, before = _time(query[after_name]), _time(query[before_name])
            if after is None or before is None:
                # Not comparable here (e.g. a leap second Python cannot read): keep one end.
                del query[before_name]
            elif before < after:
                query[after_name], query[before_name] = query[before_name], query[after_name]
    if "cursor" in query:
        sort = query.get("sort")
        query["cursor"] = _cursor(sort if sort in SORTS else "startedAt", str(query["cursor"]))
    return case
