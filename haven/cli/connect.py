"""`haven connect HOST:PORT --policy FILE --collateral PATH`: talk to an enclave over RA-TLS.

Connects with TLS 1.3, verifies the evidence in the enclave's certificate and appraises it against the
policy (see ``haven.ratls``), prints who answered — MRENCLAVE, MRSIGNER, TCB status, EAR status — and
then carries bytes: standard input to the enclave and the enclave's answer to standard output
(``--send TEXT`` sends TEXT instead and prints the reply). Nothing is sent before the peer is accepted.

Standard output carries only the enclave's bytes; the identity goes to standard error. With ``--json``
and ``--send``, standard output is one JSON object: the identity and the ``reply``. A refused enclave is
one line, ``haven: error: [KIND] MESSAGE`` (``{"verified": false, "error", "message"}`` with ``--json``),
exit status 1.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import selectors
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from haven.cli.attest import time_arg
from haven.errors import HavenError
from haven.fileio import read_bounded

if TYPE_CHECKING:
    from haven.ratls import RatlsStream

MAX_INPUT = 8 << 20  # policy roots: larger than any certificate file
MAX_REPLY = 16 << 20  # --send: the most of a reply kept in memory and printed
_HOST_PORT = re.compile(r"(?:\[(?P<v6>[0-9A-Fa-f:.%a-zA-Z]+)\]|(?P<host>[^\s:\[\]]+)):(?P<port>[0-9]{1,5})")


class ConnectUsageError(HavenError):
    """An argument of `haven connect` cannot be used as given."""


def _target(text: str) -> tuple[str, int]:
    """HOST:PORT, or [IPv6]:PORT."""
    m = _HOST_PORT.fullmatch(text)
    if m is None:
        raise argparse.ArgumentTypeError(f"{text!r} is not HOST:PORT (an IPv6 address goes in brackets)")
    port = int(m["port"])
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"port {port} is not in 1..65535")
    return m["v6"] or m["host"], port


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not 0 < value <= 3600:
        raise argparse.ArgumentTypeError("the timeout must be more than 0 and at most 3600 seconds")
    return value


def register(sub: Any) -> None:
    parser: argparse.ArgumentParser = sub.add_parser(
        "connect",
        help="connect to an enclave over RA-TLS, verify it, and exchange data",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("target", type=_target, metavar="HOST:PORT", help="where the enclave listens")
    parser.add_argument(
        "--policy", type=Path, required=True, metavar="FILE", help="the appraisal policy (JSON)"
    )
    parser.add_argument(
        "--collateral", type=Path, required=True, metavar="PATH", help="dcap-qvl JSON or a PCS directory"
    )
    parser.add_argument(
        "--root",
        type=Path,
        action="append",
        default=[],
        metavar="CERT",
        help="trust this root (PEM or DER; repeatable); if the policy lists trusted_roots, it must be one",
    )
    parser.add_argument("--send", metavar="TEXT", help="send TEXT, close our side, print the reply")
    parser.add_argument("--json", action="store_true", help="print the identity (and reply) as JSON")
    parser.add_argument(
        "--timeout", type=_seconds, default=10.0, metavar="SECONDS", help="for connecting and reading"
    )
    parser.add_argument(
        "--now", type=time_arg, metavar="TIME", help="verify at TIME (RFC 3339 or Unix seconds)"
    )
    parser.set_defaults(handler=_run)


def _refused(kind: str, message: str, as_json: bool) -> int:
    if as_json:
        print(json.dumps({"verified": False, "error": kind, "message": message}))
    else:
        print(f"haven: error: [{kind}] {message}", file=sys.stderr)
    return 1


def _identity_lines(stream: RatlsStream, where: str) -> list[str]:
    peer = stream.peer
    ev = peer.evidence
    oid = "2.23.133.5.4.9" if peer.extension == "tcg-dice" else "0.6.9.42.840.113741.1337.6"
    facts = {
        "peer": where,
        "evidence": f"{ev.tee} quote in the {peer.extension} extension ({oid}), chaining to {ev.root}",
        **ev.measurements,
        "tcb_status": ev.tcb_status + (f" ({', '.join(ev.advisory_ids)})" if ev.advisory_ids else ""),
        "debug": "yes" if ev.debug else "no",
        "ear_status": f"{peer.ear_status} (policy {peer.appraisal.policy_id})",
        "key_sha256": peer.public_key_sha256.hex(),
    }
    width = max(map(len, facts))
    return [f"{name:<{width}}  {value}" for name, value in facts.items()]


def _run(args: argparse.Namespace) -> int:
    from haven.attest.chain import load_certificates
    from haven.attest.dcap.collateral import load_collateral
    from haven.attest.errors import AttestationError
    from haven.attest.policy import load_policy
    from haven.ratls import RatlsError, open_stream

    host, port = args.target
    policy = load_policy(args.policy)
    roots_data = [(p, read_bounded(p, MAX_INPUT, error=ConnectUsageError, what="--root")) for p in args.root]
    try:
        roots = [c for p, data in roots_data for c in load_certificates(data, f"--root {p}")]
        collateral = load_collateral(args.collateral)
        stream = open_stream(
            host, port, policy, collateral=collateral, roots=roots, timeout=args.timeout, now=args.now
        )
    except (AttestationError, RatlsError) as e:
        return _refused(e.kind, str(e), args.json)
    where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    with stream:
        if args.send is not None:
            return _send(stream, args.send.encode("utf-8"), where, args.json)
        if args.json:
            print(json.dumps(_identity_json(stream, where)), file=sys.stderr, flush=True)
        else:
            print("\n".join(_identity_lines(stream, where)), file=sys.stderr, flush=True)
        return _pipe(stream)


def _identity_json(stream: RatlsStream, where: str) -> dict[str, Any]:
    return {"peer": where, **stream.peer.to_json()}


def _send(stream: RatlsStream, data: bytes, where: str, as_json: bool) -> int:
    stream.sendall(data)
    stream.close_write()
    reply = bytearray()
    while chunk := stream.recv():
        reply += chunk
        if len(reply) > MAX_REPLY:
            raise ConnectUsageError(f"the reply is larger than {MAX_REPLY} bytes")
    if as_json:
        print(json.dumps({**_identity_json(stream, where), "reply": reply.decode("utf-8", "replace")}))
        return 0
    print("\n".join(_identity_lines(stream, where)), file=sys.stderr, flush=True)
    sys.stdout.buffer.write(reply)
    sys.stdout.buffer.flush()
    return 0


def _pipe(stream: RatlsStream) -> int:
    """Standard input to the enclave, the enclave's bytes to standard output, until it closes."""
    out = sys.stdout.buffer
    stdin = sys.stdin.buffer.fileno()
    pending = stream.recv_pending()
    if pending:
        out.write(pending)
        out.flush()
    with selectors.DefaultSelector() as sel:
        sel.register(stream.socket, selectors.EVENT_READ, "net")
        try:
            sel.register(stdin, selectors.EVENT_READ, "stdin")
            stdin_open = True
        except (ValueError, OSError):
            # A regular file (or /dev/null) cannot be waited on, and never blocks: send it all now.
            while data := os.read(stdin, 1 << 16):
                stream.sendall(data)
            stream.close_write()
            stdin_open = False
        while True:
            for key, _ in sel.select():
                if key.data == "stdin":
                    data = os.read(stdin, 1 << 16)
                    if data:
                        stream.sendall(data)
                    else:
                        sel.unregister(stdin)
                        stream.close_write()
                        stdin_open = False
                    continue
                plaintext = stream.receive_once()
                if plaintext:
                    out.write(plaintext)
                    out.flush()
                if plaintext is None or stream.peer_closed:
                    if stdin_open:
                        sel.unregister(stdin)
                    return 0
