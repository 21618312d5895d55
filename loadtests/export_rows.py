"""Generated call records and CDRs for export tests and the export benchmark: one SQL
``generate_series`` per table, with caller names that exercise every escaping rule (quotes, commas,
line breaks, backslashes, non-ASCII, empty, NULL)."""

from __future__ import annotations

import datetime

START = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
STEP_S = 7  # one call every 7 seconds: 1,000,000 calls span ~81 days

CALL_RECORDS_SQL = """
INSERT INTO call_records (tenant_id, session_token, direction, from_number, to_number, caller_name,
  domain, agent_id, group_id, rule_id, status, attempts, start_time, answer_time, end_time, duration,
  billsec, disposition, call_id, created_at, updated_at)
SELECT %(tenant)s, %(prefix)s || g,
  CASE WHEN g %% 3 = 0 THEN 'outbound' ELSE 'inbound' END,
  '+1415' || lpad((g %% 10000000)::text, 7, '0'),
  '+1212555' || lpad((g %% 10000)::text, 4, '0'),
  CASE g %% 7 WHEN 0 THEN NULL WHEN 1 THEN 'Caller "' || g || '", Jr' WHEN 2 THEN E'Two\\nlines ' || g
    WHEN 3 THEN E'Back\\\\slash ' || g WHEN 4 THEN 'Zoë Ünïcødé ' || g WHEN 5 THEN '' ELSE 'Plain ' || g END,
  %(domain)s, 1 + g %% 7, 1 + g %% 3, 1,
  CASE WHEN g %% 4 = 0 THEN 'no_answer' ELSE 'completed' END, 1,
  t, t + interval '5 s', t + interval '65 s', 65, 60,
  CASE WHEN g %% 4 = 0 THEN 'NOANSWER' ELSE 'ANSWER' END, %(prefix)s || 'call-' || g, t, t
FROM generate_series(%(first)s::bigint, %(last)s::bigint) g,
     LATERAL (SELECT %(start)s::timestamptz + g * make_interval(secs => %(step)s::int) AS t) s
"""

CDRS_SQL = """
INSERT INTO cdrs (tenant_id, event_id, session_token, call_id, from_number, to_number, direction,
  disposition, start_time, answer_time, end_time, duration_seconds, billsec, domain, payload, created_at)
SELECT %(tenant)s, %(prefix)s || 'ev-' || g, %(prefix)s || g, %(prefix)s || 'call-' || g,
  '+1415' || lpad((g %% 10000000)::text, 7, '0'),
  '+1212555' || lpad((g %% 10000)::text, 4, '0'),
  CASE WHEN g %% 3 = 0 THEN 'outbound' ELSE 'inbound' END,
  CASE WHEN g %% 4 = 0 THEN 'NOANSWER' ELSE 'ANSWER' END,
  t, t + interval '5 s', t + interval '65 s', 65, 60, %(domain)s, NULL, t
FROM generate_series(%(first)s::bigint, %(last)s::bigint) g,
     LATERAL (SELECT %(start)s::timestamptz + g * make_interval(secs => %(step)s::int) AS t) s
"""


def seed_params(tenant_id: int, count: int, *, prefix: str, domain: str, first: int = 1) -> dict[str, object]:
    return {
        "tenant": tenant_id,
        "prefix": prefix,
        "domain": domain,
        "first": first,
        "last": first + count - 1,
        "start": START,
        "step": STEP_S,
    }
