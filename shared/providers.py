"""The provider catalogue (SPEC §4): one data table, served at ``GET /api/providers`` and used to
validate agents and to render their CXML."""

from __future__ import annotations

import re
from dataclasses import dataclass

import msgspec

E164 = re.compile(r"\+?[1-9]\d{6,15}")
URL = re.compile(r"https?://[A-Za-z0-9.-]+(:\d+)?(/[^\s]*)?")
VAPI_ID = re.compile(r"[A-Za-z0-9_-]{1,128}")
UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
ELEVENLABS_AGENT = re.compile(r"agent_[A-Za-z0-9]{8,64}")
SYNTHFLOW_URL = re.compile(r"https?://([A-Za-z0-9-]+\.)*synthflow\.(ai|com)(/[^\s]*)?")
SIP_URI = re.compile(r"sips?:[^\s@<>\"]+(@[^\s<>\"]+)?")
WS_URL = re.compile(r"wss?://[A-Za-z0-9.-]+(:\d+)?(/[^\s]*)?")


class ProviderInfo(msgspec.Struct, kw_only=True, frozen=True):
    """One provider as the API shows it."""

    key: str
    name: str
    cxml: str  # "service" | "sip" | "stream": which CXML element dials it
    service_value: str  # what service_value must be, in words
    requires_username: bool = False
    requires_password: bool = False
    seed: bool = False  # in the original system's list


@dataclass(frozen=True, slots=True)
class _Rule:
    info: ProviderInfo
    accepts: tuple[re.Pattern[str], ...]


_NUMBER = "E.164 number the agent answers on at the provider"
_NUMBER_OR_URL = _NUMBER + ", or the agent's URL"


def _p(
    key: str,
    name: str,
    accepts: tuple[re.Pattern[str], ...] = (E164, URL),
    words: str = _NUMBER_OR_URL,
    *,
    user: bool = False,
    password: bool = False,
    seed: bool = False,
    cxml: str = "service",
) -> _Rule:
    info = ProviderInfo(
        key=key,
        name=name,
        cxml=cxml,
        service_value=words,
        requires_username=user,
        requires_password=password,
        seed=seed,
    )
    return _Rule(info=info, accepts=accepts)


_RULES: tuple[_Rule, ...] = (
    # The original system's seed list.
    _p("vapi", "Vapi", (E164, VAPI_ID), _NUMBER + ", or a Vapi assistant id", seed=True),
    _p(
        "synthflow",
        "Synthflow",
        (E164, SYNTHFLOW_URL),
        _NUMBER + ", or a Synthflow agent URL",
        user=True,
        password=True,
        seed=True,
    ),
    _p("dasha", "Dasha", seed=True),
    _p("superdash.ai", "SuperDash.ai", user=True, password=True, seed=True),
    _p(
        "elevenlabs",
        "ElevenLabs",
        (E164, UUID, ELEVENLABS_AGENT),
        _NUMBER + ", or an ElevenLabs agent id (UUID or agent_…)",
        user=True,
        seed=True,
    ),
    _p("deepvox", "Deepvox", seed=True),
    _p("relayhawk", "RelayHawk", seed=True),
    _p("voicehub", "VoiceHub", seed=True),
    _p("retell-udp", "Retell (UDP)", seed=True),
    _p("retell-tcp", "Retell (TCP)", seed=True),
    _p("retell-tls", "Retell (TLS)", seed=True),
    _p("retell", "Retell", seed=True),
    _p("fonio", "Fonio", seed=True),
    _p("sigmamind", "SigmaMind", seed=True),
    _p("modon", "Modon", seed=True),
    _p("puretalk", "PureTalk", seed=True),
    _p("millis-us", "Millis (US)", seed=True),
    _p("millis-eu", "Millis (EU)", seed=True),
    # Also accepted by Cloudonix.
    _p("ultravox", "Ultravox"),
    _p("vapi-udp", "Vapi (UDP)", (E164, VAPI_ID), _NUMBER + ", or a Vapi assistant id"),
    _p("vapi-noproxy", "Vapi (no proxy)", (E164, VAPI_ID), _NUMBER + ", or a Vapi assistant id"),
    _p("deepvox-sandbox", "Deepvox (sandbox)"),
    _p("modon-sandbox", "Modon (sandbox)"),
    _p("puretalk-tcp", "PureTalk (TCP)"),
    _p("rapida", "Rapida"),
    _p("smallest", "Smallest.ai"),
    _p("call2me", "Call2Me"),
    _p("call2me-tcp", "Call2Me (TCP)"),
    _p("call2me-tls", "Call2Me (TLS)"),
    _p("revring", "RevRing"),
    _p("openai", "OpenAI Realtime"),
    _p("vogent", "Vogent"),
    _p("omnidim.im", "OmniDimension"),
    _p("ringg", "Ringg AI"),
    _p("ringg-tcp", "Ringg AI (TCP)"),
    _p("ringg-tls", "Ringg AI (TLS)"),
    _p("vomyra", "Vomyra"),
    _p("telnyx", "Telnyx"),
    _p("telnyx-udp", "Telnyx (UDP)"),
    _p("telnyx-tcp", "Telnyx (TCP)"),
    _p("telnyx-tls", "Telnyx (TLS)"),
    # Not a Cloudonix <Service> provider: dialled directly.
    _p("sip", "SIP URI", (SIP_URI,), "a SIP URI (sip:agent@host)", cxml="sip"),
    _p("stream", "WebSocket stream", (WS_URL,), "a ws:// or wss:// URL to stream the call to", cxml="stream"),
)

PROVIDERS: dict[str, ProviderInfo] = {r.info.key: r.info for r in _RULES}
_ACCEPTS: dict[str, tuple[re.Pattern[str], ...]] = {r.info.key: r.accepts for r in _RULES}


def provider_list() -> list[ProviderInfo]:
    return [r.info for r in _RULES]


def validate_agent(
    provider: str, service_value: str, username: str | None, password: str | None
) -> list[tuple[str, str]]:
    """Problems with an agent's config as (field, message) pairs; empty when it is valid."""
    info = PROVIDERS.get(provider)
    if info is None:
        return [("provider", f"unknown provider {provider!r}; see GET /api/providers")]
    problems: list[tuple[str, str]] = []
    value = service_value.strip()
    if not value:
        problems.append(("service_value", "service_value is required"))
    elif len(value) > 1024:
        problems.append(("service_value", "service_value is longer than 1024 characters"))
    elif not any(p.fullmatch(value) for p in _ACCEPTS[provider]):
        problems.append(("service_value", f"{info.name} expects {info.service_value}"))
    if info.requires_username and not username:
        problems.append(("username", f"{info.name} requires a username"))
    if info.requires_password and not password:
        problems.append(("password", f"{info.name} requires a password"))
    return problems
