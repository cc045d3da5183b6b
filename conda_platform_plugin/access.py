"""Who may do what: the permission vocabulary and its rules, as pure functions.

Channel permissions (read < write < manage) are granted per channel and inherited by its
subchannels. Global attributes cover what is not one channel's: creating channels, mirrors
(separately for channel and subchannel mirrors, each read < write < manage), policies, users.
Admins have everything. A token may be limited to scopes, written in the same vocabulary:
``channel.write:team`` or ``channels.create``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from .errors import BadRequest
from .names import parse_channel_path

CHANNEL_LEVELS = ("read", "write", "manage")
GLOBAL_ATTRIBUTES = (
    "channels.create",
    "mirrors.channel.read",
    "mirrors.channel.write",
    "mirrors.channel.manage",
    "mirrors.subchannel.read",
    "mirrors.subchannel.write",
    "mirrors.subchannel.manage",
    "policies.manage",
    "users.manage",
)


def _rank(level: str) -> int:
    return CHANNEL_LEVELS.index(level)


def _attribute_implies(held: str, wanted: str) -> bool:
    """``mirrors.channel.manage`` implies ``mirrors.channel.write`` and ``.read``."""
    if held == wanted:
        return True
    h_base, _, h_level = held.rpartition(".")
    w_base, _, w_level = wanted.rpartition(".")
    return (h_base == w_base and h_base.startswith("mirrors.") and h_level in CHANNEL_LEVELS
            and w_level in CHANNEL_LEVELS and _rank(h_level) >= _rank(w_level))


def parse_scope(scope: str) -> str:
    """Validate one scope (or grantable permission) string and return it normalised."""
    scope = (scope or "").strip()
    if scope in GLOBAL_ATTRIBUTES:
        return scope
    perm, sep, channel = scope.partition(":")
    if sep and perm.startswith("channel.") and perm[len("channel."):] in CHANNEL_LEVELS and channel:
        ch, sub = parse_channel_path(channel)
        return f"{perm}:{ch}/{sub}" if sub else f"{perm}:{ch}"
    raise BadRequest(
        f"invalid permission {scope!r}: use channel.read|write|manage:CHANNEL or one of {', '.join(GLOBAL_ATTRIBUTES)}"
    )


def _channel_allows(grants: Mapping[str, str], channel: str, level: str) -> bool:
    """A grant on the channel, or on the channel a subchannel belongs to."""
    for name in (channel, channel.split("/")[0]):
        held = grants.get(name)
        if held is not None and _rank(held) >= _rank(level):
            return True
    return False


def _scopes_allow(scopes: frozenset[str] | None, wanted: str, channel: str | None) -> bool:
    if scopes is None:
        return True
    if channel is not None:
        level = wanted.split(".", 1)[1]
        grants: dict[str, str] = {}
        for s in scopes:
            perm, sep, ch = s.partition(":")
            if sep:
                lvl = perm.split(".", 1)[1]
                if ch not in grants or _rank(lvl) > _rank(grants[ch]):
                    grants[ch] = lvl
        return _channel_allows(grants, channel, level)
    return any(_attribute_implies(s, wanted) for s in scopes if ":" not in s)


@dataclass(frozen=True)
class Identity:
    name: str
    admin: bool = False
    channel_grants: Mapping[str, str] = field(default_factory=dict)  # channel name → highest level
    attributes: frozenset[str] = frozenset()
    scopes: frozenset[str] | None = None
    token_id: int | None = None

    @property
    def anonymous(self) -> bool:
        return self.token_id is None

    def can_channel(self, channel: str, level: str) -> bool:
        if level not in CHANNEL_LEVELS:
            raise ValueError(level)
        held = self.admin or _channel_allows(self.channel_grants, channel, level)
        return held and _scopes_allow(self.scopes, f"channel.{level}", channel)

    def has(self, attribute: str) -> bool:
        held = self.admin or any(_attribute_implies(a, attribute) for a in self.attributes)
        return held and _scopes_allow(self.scopes, attribute, None)


ANONYMOUS = Identity("anonymous")


def grants_to_identity(name: str, admin: bool, grants: Iterable[tuple[str | None, str]],
                       scopes: Iterable[str] | None, token_id: int | None) -> Identity:
    """Fold stored grants — (channel name, level) or (None, attribute) — into an Identity."""
    channel_grants: dict[str, str] = {}
    attributes = set()
    for channel, perm in grants:
        if channel is None:
            attributes.add(perm)
        elif channel not in channel_grants or _rank(perm) > _rank(channel_grants[channel]):
            channel_grants[channel] = perm
    return Identity(name, admin, channel_grants, frozenset(attributes),
                    None if scopes is None else frozenset(scopes), token_id)
