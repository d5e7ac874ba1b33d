#!/usr/bin/env python3
"""A memq-rs worker in Python, standard library only.

    consumer --queue words --prefetch 100 --worker python3 examples/worker.py

The consumer starts this program once per slot and keeps it running. Each item arrives on stdin
as one JSON line:

    {"id": "01JX...", "body": "some text", "attempt": 1, "queue": "words", "lease": "01JX..."}

and is answered with one JSON line on stdout, in any order:

    {"id": "01JX...", "ok": true}
    {"id": "01JX...", "ok": false, "retryAfter": "30s", "error": "why"}

`ok: true` acks the item; `ok: false` puts it back for a retry after `retryAfter` (or the
consumer's --retry-delay backoff). Anything else on stdout makes the consumer restart the worker
and retry the items it held, so logs go to stderr. When no items are left, stdin ends: exit.
"""

import hashlib
import json
import sys


def work(body):
    """The work for one item: here, a SHA-256 of its text. Raise to fail the item."""
    if not body:
        raise ValueError("an empty item has nothing to hash")
    return hashlib.sha256(body.encode()).hexdigest()


def answer(item):
    """The answer line for one item."""
    try:
        digest = work(item["body"])
    except Exception as e:  # any failure of the work is the item's failure, not the worker's
        return {"id": item["id"], "ok": False, "retryAfter": "10s", "error": str(e)}
    print(f"{item['id']} (attempt {item['attempt']}): sha256 {digest}", file=sys.stderr)
    return {"id": item["id"], "ok": True}


def main():
    for line in sys.stdin:
        item = json.loads(line)
        sys.stdout.write(json.dumps(answer(item)) + "\n")
        # The consumer waits for the answer: send it now, not when a buffer fills.
        sys.stdout.flush()


if __name__ == "__main__":
    main()
