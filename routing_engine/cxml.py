"""CXML rendering: the one place that writes the documents the engine answers Cloudonix with.

Everything that depends only on the snapshot (agent fragments, no-agent answers) is rendered once at
compile time; per request only the action URL and the caller id are concatenated in.
"""

from __future__ import annotations

import msgspec
from cryptography.fernet import Fernet, InvalidToken

from shared.enums import NoAgentAction
from shared.providers import PROVIDERS

XML_HEAD = '<?xml version="1.0" encoding="UTF-8"?>\n'
RESPONSE_OPEN = XML_HEAD + "<Response>"
RESPONSE_CLOSE = "</Response>"
HANGUP = RESPONSE_OPEN + "<Hangup/>" + RESPONSE_CLOSE
DEFAULT_FALLBACK = (
    RESPONSE_OPEN
    + "<Say>We are sorry, we cannot take your call right now. Please try again later.</Say><Hangup/>"
    + RESPONSE_CLOSE
)

# Attribute-safe escaping (also fine for text nodes). Control characters other than tab/CR/LF are not
# allowed in XML 1.0 at all, so they are dropped rather than escaped.
_ESCAPES: dict[int, str | None] = {
    ord("&"): "&amp;",
    ord("<"): "&lt;",
    ord(">"): "&gt;",
    ord('"'): "&quot;",
    ord("'"): "&apos;",
}
_ESCAPES.update({c: None for c in range(32) if c not in (9, 10, 13)})
_ESCAPES.update({0xFFFE: None, 0xFFFF: None})
_ESCAPE_TABLE = str.maketrans(_ESCAPES)


def escape(value: str) -> str:
    """Escape ``value`` for an XML attribute or text node."""
    return value.translate(_ESCAPE_TABLE)


class Credentials(msgspec.Struct, kw_only=True, frozen=True):
    username: str | None = None
    password: str | None = None


_CREDENTIALS_DECODER = msgspec.msgpack.Decoder(Credentials)


class CredentialsError(ValueError):
    """The snapshot carries credentials this engine cannot decrypt (wrong or missing key)."""


def decrypt_credentials(token: str | None, fernet: Fernet | None) -> Credentials:
    """Decrypt an AgentSnap.credentials Fernet token into username/password."""
    if not token:
        return Credentials()
    if fernet is None:
        raise CredentialsError("agent has credentials but VLB_SNAPSHOT_KEY is not set")
    try:
        return _CREDENTIALS_DECODER.decode(fernet.decrypt(token.encode()))
    except (InvalidToken, msgspec.DecodeError, ValueError) as exc:
        raise CredentialsError("agent credentials cannot be decrypted with VLB_SNAPSHOT_KEY") from exc


def _credential_attrs(creds: Credentials) -> str:
    attrs = ""
    if creds.username:
        attrs += f' username="{escape(creds.username)}"'
    if creds.password:
        attrs += f' password="{escape(creds.password)}"'
    return attrs


# Stands for an agent's credential attributes in the answers the balancer keeps in Redis (a repeated
# webhook is answered from there for a day): "\x01<agent id>\x01". Redis never holds a credential;
# the engine puts them back (fill_secrets) from the snapshot it holds, after the script call.
SECRET_MARK = "\x01"  # noqa: S105 (a marker, not a password)


class AgentFragment(msgspec.Struct, kw_only=True, frozen=True, gc=False):
    """How one agent is dialled. ``in_dial`` fragments go inside ``<Dial>``; the others (a stream)
    are a verb of their own. ``secret``: the credential attributes the xml holds a mark for."""

    in_dial: bool
    xml: str
    secret: str = ""


def agent_fragment(
    provider: str, service_value: str, creds: Credentials, agent_id: int | None = None
) -> AgentFragment:
    """The CXML that reaches one agent, per the provider catalogue's ``cxml`` kind. With ``agent_id``
    the credentials are held out of the xml (a SECRET_MARK in their place, the attributes in
    ``secret``)."""
    info = PROVIDERS.get(provider)
    kind = info.cxml if info is not None else "service"
    value = escape(service_value.strip())
    attrs = _credential_attrs(creds)
    secret = ""
    if attrs and agent_id is not None:
        secret, attrs = attrs, f"{SECRET_MARK}{agent_id}{SECRET_MARK}"
    if kind == "sip":
        return AgentFragment(in_dial=True, xml=f"<Sip{attrs}>{value}</Sip>", secret=secret)
    if kind == "stream":
        return AgentFragment(in_dial=False, xml=f'<Connect><Stream url="{value}"/></Connect>')
    return AgentFragment(
        in_dial=True,
        xml=f'<Service provider="{escape(provider)}"{attrs}>{value}</Service>',
        secret=secret,
    )


def fill_secrets(text: str, secrets: dict[str, str]) -> str:
    """Put the credential attributes back where ``agent_fragment`` left marks (an agent whose
    credentials are gone from the snapshot since: none)."""
    start = text.find(SECRET_MARK)
    while start >= 0:
        end = text.find(SECRET_MARK, start + 1)
        if end < 0:
            break
        attrs = secrets.get(text[start + 1 : end], "")
        text = text[:start] + attrs + text[end + 1 :]
        start = text.find(SECRET_MARK, start + len(attrs))
    return text


def agent_answer_parts(fragment: AgentFragment, action_url: str, ring_timeout_s: int) -> tuple[str, str]:
    """A full answer dialling one agent, split where the caller-id attribute goes:
    ``head + caller_attr(caller) + tail``; a stream answer has no ``<Dial>`` (``tail`` is empty and the
    caller id is not used). ``action_url`` must already be escaped."""
    if not fragment.in_dial:
        return RESPONSE_OPEN + fragment.xml + RESPONSE_CLOSE, ""
    return (
        f'{RESPONSE_OPEN}<Dial action="{action_url}" method="POST" timeout="{ring_timeout_s}"',
        f">{fragment.xml}</Dial>{RESPONSE_CLOSE}",
    )


def number_answer(number: str, action_url: str, ring_timeout_s: int) -> str:
    """An overflow step dialling a phone number (``action_url`` already escaped): its dial-status comes
    back like an agent's, so a failed dial can go on with the chain while the budget lasts."""
    return (
        f'{RESPONSE_OPEN}<Dial action="{action_url}" method="POST" timeout="{ring_timeout_s}">'
        f"<Number>{escape(number)}</Number></Dial>{RESPONSE_CLOSE}"
    )


def announcement_answer(message: str | None, play_url: str | None) -> str:
    """An overflow step's announcement: ``<Play>`` and/or ``<Say>``, then ``<Hangup/>``."""
    body = ""
    if play_url:
        body += f"<Play>{escape(play_url)}</Play>"
    if message:
        body += f"<Say>{escape(message)}</Say>"
    return f"{RESPONSE_OPEN}{body}<Hangup/>{RESPONSE_CLOSE}"


def caller_attr(caller_id: str) -> str:
    """The ``<Dial>`` caller-id attribute (``caller_id`` already escaped), or nothing."""
    return f' callerId="{caller_id}"' if caller_id else ""


def agent_answer(fragment: AgentFragment, action_url: str, ring_timeout_s: int, caller_id: str) -> str:
    """A full answer dialling one agent; ``action_url`` and ``caller_id`` must already be escaped."""
    head, tail = agent_answer_parts(fragment, action_url, ring_timeout_s)
    return head + caller_attr(caller_id) + tail if tail else head


def no_agent_answer(action: NoAgentAction, message: str) -> str:
    """What a caller hears when no agent can take the call."""
    if action == NoAgentAction.REJECT_BUSY:
        return RESPONSE_OPEN + '<Reject reason="busy"/>' + RESPONSE_CLOSE
    if action == NoAgentAction.REJECT_CONGESTION:
        return RESPONSE_OPEN + '<Reject reason="congestion"/>' + RESPONSE_CLOSE
    return f"{RESPONSE_OPEN}<Say>{escape(message)}</Say><Hangup/>{RESPONSE_CLOSE}"


def outbound_answer(caller_id: str, trunks: list[str], number: str) -> str:
    """An outbound call through the tenant's trunks (values are escaped here)."""
    caller = f' callerId="{escape(caller_id)}"' if caller_id else ""
    trunk_attr = f' trunks="{escape(",".join(trunks))}"' if trunks else ""
    return (
        f"{RESPONSE_OPEN}<Dial{caller}{trunk_attr}><Number>{escape(number)}</Number></Dial>{RESPONSE_CLOSE}"
    )


def fallback_answer(fallback_cxml: str | None) -> str:
    """The tenant's answer for unexpected failures (raw CXML they configured) or the built-in one."""
    if not fallback_cxml or not fallback_cxml.strip():
        return DEFAULT_FALLBACK
    text = fallback_cxml.strip()
    return text if text.startswith("<?xml") else XML_HEAD + text
