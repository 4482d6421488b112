"""Test doubles for the login tests: a directory of targets and a scripted initiator."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from odxtarget.config import AclConfig, ChapConfig, PortalConfig, TargetConfig
from odxtarget.transport.iscsi.login import LoginReply, LoginRequestInfo, LoginStateMachine
from odxtarget.transport.iscsi.text import encode_text, parse_text

INITIATOR = "iqn.2024-01.org.example:initiator"
OTHER_INITIATOR = "iqn.2024-01.org.example:stranger"
OPEN_TARGET = "iqn.2024-01.org.example:open"          # demo mode, no CHAP
ACL_TARGET = "iqn.2024-01.org.example:acl"            # ACL names INITIATOR, no CHAP
CHAP_TARGET = "iqn.2024-01.org.example:chap"          # demo mode, target-wide one-way CHAP
MUTUAL_TARGET = "iqn.2024-01.org.example:mutual"      # ACL with mutual CHAP credentials
ONE_WAY_ACL_TARGET = "iqn.2024-01.org.example:oneway"  # ACL CHAP without mutual credentials
ISID = bytes.fromhex("800000000001")

ONE_WAY = ChapConfig(userid="alice", password="initiator-secret")
MUTUAL = ChapConfig(userid="alice", password="initiator-secret",
                    mutual_userid="target-bob", mutual_password="target-secret")


class FakeDirectory:
    """The daemon's TargetDirectory, over a plain list; targets can be removed mid-login."""

    def __init__(self, targets: list[TargetConfig]):
        self._targets = {target.iqn: target for target in targets}

    def lookup(self, target_name: str) -> TargetConfig | None:
        return self._targets.get(target_name)

    def targets(self) -> list[TargetConfig]:
        return list(self._targets.values())

    def remove(self, target_name: str) -> None:
        del self._targets[target_name]


def standard_directory() -> FakeDirectory:
    return FakeDirectory([
        TargetConfig(iqn=OPEN_TARGET, demo_mode=True, tpgt=1, alias="open disk",
                     portals=[PortalConfig("127.0.0.1", 3260), PortalConfig("::1", 3261)]),
        TargetConfig(iqn=ACL_TARGET, acls=[AclConfig(INITIATOR)], tpgt=7,
                     portals=[PortalConfig("192.0.2.10", 3260)]),
        TargetConfig(iqn=CHAP_TARGET, demo_mode=True, chap=ONE_WAY),
        TargetConfig(iqn=MUTUAL_TARGET, acls=[AclConfig(INITIATOR, chap=MUTUAL)]),
        TargetConfig(iqn=ONE_WAY_ACL_TARGET, acls=[AclConfig(INITIATOR, chap=ONE_WAY)]),
    ])


def request(pairs: list[tuple[str, str]] | bytes = (), *, transit: bool = True, cont: bool = False,
            csg: int = 1, nsg: int = 3, version_max: int = 0, version_min: int = 0, isid: bytes = ISID,
            tsih: int = 0, cid: int = 0) -> LoginRequestInfo:
    data = pairs if isinstance(pairs, bytes) else encode_text(pairs)
    return LoginRequestInfo(transit=transit, cont=cont, csg=csg, nsg=nsg, version_max=version_max,
                            version_min=version_min, isid=isid, tsih=tsih, initiator_task_tag=0x1234,
                            cid=cid, cmd_sn=1, exp_stat_sn=0, data=data)


def leading_keys(target: str | None = OPEN_TARGET, initiator: str = INITIATOR,
                 session_type: str = "Normal") -> list[tuple[str, str]]:
    keys = [("InitiatorName", initiator), ("SessionType", session_type)]
    if target is not None:
        keys.append(("TargetName", target))
    return keys


def answers(reply: LoginReply) -> dict[str, str]:
    return dict(parse_text(reply.data))


def md5_response(identifier: int, secret: str, challenge: bytes) -> bytes:
    """RFC 1994 response, computed here independently of chap.py."""
    return hashlib.md5(bytes([identifier]) + secret.encode() + challenge).digest()


class CountingBytes:
    """Deterministic stand-in for secrets.token_bytes: 0x00, 0x01, ... continuing across calls."""

    def __init__(self, start: int = 0):
        self.next = start

    def __call__(self, count: int) -> bytes:
        out = bytes((self.next + i) % 256 for i in range(count))
        self.next += count
        return out


@dataclass
class ChapInitiator:
    """Drives a LoginStateMachine through CHAP the way libiscsi 1.19.0 does."""

    machine: LoginStateMachine
    target: str
    chap: ChapConfig
    mutual_challenge: bytes | None = None
    mutual_identifier: int = 1
    replies: list[LoginReply] = field(default_factory=list)

    def offer(self) -> LoginReply:
        reply = self.machine.receive(request(leading_keys(self.target) + [("AuthMethod", "CHAP,None")],
                                             csg=0, nsg=1))
        self.replies.append(reply)
        return reply

    def select_algorithm(self, algorithms: str = "5") -> LoginReply:
        reply = self.machine.receive(request([("CHAP_A", algorithms)], transit=False, csg=0, nsg=1))
        self.replies.append(reply)
        return reply

    def respond(self, *, secret: str | None = None, name: str | None = None, hex_upper: bool = True,
                base64: bool = False) -> LoginReply:
        challenge_reply = answers(self.replies[-1])
        identifier = int(challenge_reply["CHAP_I"])
        challenge = bytes.fromhex(challenge_reply["CHAP_C"][2:])
        response = md5_response(identifier, secret or self.chap.password, challenge)
        if base64:
            import base64 as b64
            encoded = "0b" + b64.b64encode(response).decode()
        else:
            encoded = "0x" + (response.hex().upper() if hex_upper else response.hex())
        keys = [("CHAP_N", name or self.chap.userid), ("CHAP_R", encoded)]
        if self.mutual_challenge is not None:
            keys += [("CHAP_I", str(self.mutual_identifier)), ("CHAP_C", "0x" + self.mutual_challenge.hex())]
        reply = self.machine.receive(request(keys, csg=0, nsg=1))
        self.replies.append(reply)
        return reply
