"""Path and query parameters bounded at the edge, so no value the database cannot hold reaches it and
the OpenAPI document states every limit the API enforces.

PostgreSQL's ids are bigints: an id beyond 2^63-1 (or below 1) is refused with a 422 naming the field,
the answer to any value outside the documented schema (the document says ``1 ≤ id ≤ 2^63-1``), not a
404: no row is looked up for it. ``page`` is at most ``MAX_PAGE`` so the offset ``page * per_page``
stays far inside a bigint, and text filters refuse NUL, which PostgreSQL's text cannot hold.

    async def get_agent(self, auth: Auth, agent_id: Id) -> AgentRead: ...
    async def list_x(self, page: PageNumber = 1, per_page: PerPage100 = 20, search: Search = None): ...
"""

from __future__ import annotations

from typing import Annotated

from litestar.params import PathParameter, QueryParameter

MAX_ID = 2**63 - 1  # PostgreSQL bigint
MAX_PAGE = 1_000_000  # with per_page ≤ 200, an offset of at most 2·10^8 rows
MAX_TEXT = 256  # a filter longer than any stored value it could match
NO_NUL = r"^[^\x00]*$"

# Path ids (``/api/voice-agents/{agent_id:int}``).
Id = Annotated[int, PathParameter(ge=1, le=MAX_ID, description="The record's id (1 to 2^63-1).")]
# Optional id filters in the query (``?domain_id=``).
IdFilter = Annotated[int | None, QueryParameter(ge=1, le=MAX_ID, required=False)]

PageNumber = Annotated[int, QueryParameter(ge=1, le=MAX_PAGE, description="Page number, from 1.")]
PerPage100 = Annotated[int, QueryParameter(ge=1, le=100, description="Items per page (at most 100).")]
PerPage200 = Annotated[int, QueryParameter(ge=1, le=200, description="Items per page (at most 200).")]

# Free-text filters and exact-match filters given as text.
Search = Annotated[str | None, QueryParameter(max_length=MAX_TEXT, pattern=NO_NUL, required=False)]
Text = Annotated[str | None, QueryParameter(max_length=MAX_TEXT, pattern=NO_NUL, required=False)]

# A session token in the path (``/api/calls/{session_token}``): what the engine accepts as one.
SessionToken = Annotated[
    str,
    PathParameter(
        min_length=1, max_length=128, pattern=r"^[A-Za-z0-9._:@-]+$", description="The call's session token."
    ),
]
# Seconds filters (``?min_duration=``), an ``integer`` column.
Seconds = Annotated[int | None, QueryParameter(ge=0, le=2**31 - 1, required=False)]
