"""Send a realistic Cloudonix voice-application request to an engine and print the CXML it answers.

    python -m routing_engine.simulate --url http://127.0.0.1:8080 --domain acme.cloudonix.net --key KEY
        [--to +12125550199] [--from +14155550100] [--direction inbound] [--shape json|form|get]
        [--dial-status no-answer ...]

``--dial-status`` follows the answer's ``<Dial action>`` with that DialCallStatus (repeatable: one
callback per value, each following the previous answer), as Cloudonix does when an agent fails.
"""

from __future__ import annotations

import argparse
import sys
import time
import uuid
import xml.etree.ElementTree as ET
from typing import Any
from urllib.parse import urlparse

import httpx


def inbound_payload(session: str, domain: str, to: str, from_: str, direction: str) -> dict[str, Any]:
    """The first request of a call, shaped like Cloudonix's (see the fixtures under shared/)."""
    return {
        "ApplicationSid": str(uuid.uuid4()),
        "ApiVersion": "1",
        "CallStatus": "unknown" if direction == "inbound" else "in-progress",
        "From": from_,
        "To": to,
        "CallerName": "SIMULATED CALLER",
        "CallSid": session,
        "Session": session,
        "Direction": direction,
        "Domain": domain,
        "AccountSid": domain,
        "SessionData": {
            "token": session,
            "destination": to,
            "callerId": from_,
            "callStartTime": int(time.time() * 1000),
            "status": "new",
            "domainNameOrId": domain,
        },
    }


def _send(
    client: httpx.Client, url: str, shape: str, body: dict[str, Any], headers: dict[str, str]
) -> httpx.Response:
    flat = {k: str(v) for k, v in body.items() if not isinstance(v, dict | list)}
    if shape == "form":
        return client.post(url, data=flat, headers=headers)
    if shape == "get":
        return client.get(url, params=flat, headers=headers)
    return client.post(url, json=body, headers=headers)


def _action_of(cxml: str) -> str | None:
    try:
        # The engine under test answered this; the stdlib expat (>= 2.4) caps entity expansion anyway.
        dial = ET.fromstring(cxml.encode()).find("Dial")  # noqa: S314
    except ET.ParseError:
        return None
    return dial.get("action") if dial is not None else None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vlb simulate", description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--url", required=True, help="engine base URL, e.g. http://127.0.0.1:8080")
    parser.add_argument("--domain", required=True, help="the Cloudonix domain (or a registered alias)")
    parser.add_argument("--key", required=True, help="the domain's webhook key")
    parser.add_argument("--to", default="+12125550199", help="called number")
    parser.add_argument("--from", dest="from_", default="+14155550100", help="calling number")
    parser.add_argument("--direction", default="inbound", choices=["inbound", "subscriber", "outbound-api"])
    parser.add_argument("--shape", default="json", choices=["json", "form", "get"], help="request encoding")
    parser.add_argument("--session", default=None, help="session token (default: a new random one)")
    parser.add_argument(
        "--dial-status",
        action="append",
        default=[],
        metavar="STATUS",
        help="follow the <Dial action> with this DialCallStatus (repeatable)",
    )
    parser.add_argument("--timeout", type=float, default=5.0)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    session = args.session or uuid.uuid4().hex
    base = args.url.rstrip("/")
    body = inbound_payload(session, args.domain, args.to, args.from_, args.direction)
    headers = {
        "User-Agent": "vlb-simulate",
        "Authorization": f"Bearer {args.key}",
        "X-CX-Domain": args.domain,
        "X-CX-Session": session,
        "X-CX-From": args.from_,
        "X-CX-To": args.to,
    }
    with httpx.Client(timeout=args.timeout) as client:
        try:
            response = _send(client, f"{base}/api/voice/application/{args.domain}", args.shape, body, headers)
        except httpx.HTTPError as exc:
            print(f"request failed: {exc}", file=sys.stderr)
            return 2
        print(f"# session {session}: HTTP {response.status_code}")
        print(response.text)
        for status in args.dial_status:
            action = _action_of(response.text) if response.status_code == 200 else None
            if action is None:
                print("# no <Dial action> to follow", file=sys.stderr)
                return 1
            parsed = urlparse(action)
            # Follow on the engine we were pointed at (the action's host may be the public URL).
            follow = f"{base}{parsed.path}" + (f"?{parsed.query}" if parsed.query else "")
            response = _send(client, follow, args.shape, {**body, "DialCallStatus": status}, headers)
            print(f"# dial-status {status}: HTTP {response.status_code}")
            print(response.text)
    return 0 if response.status_code == 200 else 1


if __name__ == "__main__":
    raise SystemExit(main())
