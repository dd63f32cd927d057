#!/usr/bin/env python3
"""The key-registry test vectors of docs/SERVICES.md, computed from that page alone.

Builds a handle's chain (a claim naming a recovery key, a rotation by the
key, a revocation by the recovery key) with ed25519 signatures over the
entry layout SERVICES.md "Public key registry: entries" gives, the log's
leaves, the RFC 6962 Merkle tree of them with an inclusion and a
consistency proof (RFC 6962 section 2.1, written here from the RFC's own
definitions), the operator's C2SP signed-note checkpoint, its key id and
verifier key, and a LOOKUP frame, from the byte layouts SERVICES.md
describes, not from the Rust code. Prints one `name value` line per vector,
which registry/src/vectors.rs (`python_vectors_agree`) compares with its
constants.

Needs Python 3 with the `cryptography` module:
    pip install cryptography
Usage: python3 scripts/registry-vectors.py
"""

import base64
import hashlib
import struct
import sys

try:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
except ImportError as error:  # the caller prints a skip reason
    print(f"missing module: {error.name}", file=sys.stderr)
    sys.exit(3)

# SERVICES.md "Public key registry".
VERSION = 1
CLAIM, ROTATE, REVOKE = 1, 2, 3
PUBLIC, LOOKUP_ONLY, PRIVATE = 1, 2, 3
SIGNER_KEY, SIGNER_RECOVERY = 1, 2
SIGNATURE_CONTEXT = b"peers-registry v1 entry\n"
LEAF_ENTRY, LEAF_COMMITMENT = 1, 2

# SERVICES.md "Public key registry: test vectors": the inputs.
ALICE_SEED = bytes([1] * 32)
LAPTOP_SEED = bytes([2] * 32)
RECOVERY_SEED = bytes([3] * 32)
OPERATOR_SEED = bytes([7] * 32)
CLAIM_EXPIRES = 1_800_000_000
ROTATE_EXPIRES = 1_900_000_000


def key_pair(seed):
    private = Ed25519PrivateKey.from_private_bytes(seed)
    public = private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    return private, public


def entry(signer_private, kind, handle, key, discoverability, expires, recovery, previous, signer):
    body = bytes([VERSION, kind, len(handle)]) + handle + key + bytes([discoverability])
    body += struct.pack("<Q", expires)
    body += (bytes([1]) + recovery) if recovery is not None else bytes([0])
    body += previous + bytes([signer])
    return body + signer_private.sign(SIGNATURE_CONTEXT + body)


def leaf(entry_bytes, discoverability):
    if discoverability == PUBLIC:
        return bytes([LEAF_ENTRY]) + entry_bytes
    return bytes([LEAF_COMMITMENT]) + hashlib.sha256(entry_bytes).digest()


def leaf_hash(data):
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left, right):
    return hashlib.sha256(b"\x01" + left + right).digest()


def split(n):
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def mth(leaves):
    """RFC 6962 MTH(D[n])."""
    if not leaves:
        return hashlib.sha256(b"").digest()
    if len(leaves) == 1:
        return leaf_hash(leaves[0])
    k = split(len(leaves))
    return node_hash(mth(leaves[:k]), mth(leaves[k:]))


def path(m, leaves):
    """RFC 6962 PATH(m, D[n])."""
    if len(leaves) <= 1:
        return []
    k = split(len(leaves))
    if m < k:
        return path(m, leaves[:k]) + [mth(leaves[k:])]
    return path(m - k, leaves[k:]) + [mth(leaves[:k])]


def subproof(m, leaves, whole):
    """RFC 6962 SUBPROOF(m, D[n], b)."""
    n = len(leaves)
    if m == n:
        return [] if whole else [mth(leaves)]
    k = split(n)
    if m <= k:
        return subproof(m, leaves[:k], whole) + [mth(leaves[k:])]
    return subproof(m - k, leaves[k:], False) + [mth(leaves[:k])]


def message(tag, fields):
    body = bytes([tag, len(fields)])
    for field in fields:
        body += struct.pack("<H", len(field)) + field
    return body


def main():
    alice, alice_key = key_pair(ALICE_SEED)
    _, laptop_key = key_pair(LAPTOP_SEED)
    recovery, recovery_key = key_pair(RECOVERY_SEED)
    operator, operator_key = key_pair(OPERATOR_SEED)
    handle = b"alice"

    claim = entry(alice, CLAIM, handle, alice_key, PUBLIC, CLAIM_EXPIRES, recovery_key, bytes(32), SIGNER_KEY)
    claim_hash = hashlib.sha256(claim).digest()
    rotate = entry(alice, ROTATE, handle, laptop_key, LOOKUP_ONLY, ROTATE_EXPIRES, None, claim_hash, SIGNER_KEY)
    rotate_hash = hashlib.sha256(rotate).digest()
    revoke = entry(recovery, REVOKE, handle, bytes(32), LOOKUP_ONLY, 0, None, rotate_hash, SIGNER_RECOVERY)
    leaves = [leaf(claim, PUBLIC), leaf(rotate, LOOKUP_ONLY), leaf(revoke, LOOKUP_ONLY)]
    root = mth(leaves)

    origin = "peers-registry/" + operator_key[:8].hex()
    key_id = hashlib.sha256(origin.encode() + b"\n" + b"\x01" + operator_key).digest()[:4]
    body = f"{origin}\n3\n{base64.b64encode(root).decode()}\n"
    signature = operator.sign(body.encode())
    note = body + "\n" + "\u2014 " + origin + " " + base64.b64encode(key_id + signature).decode() + "\n"
    verifier = origin + "+" + key_id.hex() + "+" + base64.b64encode(b"\x01" + operator_key).decode()

    lookup = message(1, [handle, b"", struct.pack("<Q", 3)])
    frame = struct.pack("<I", len(lookup)) + lookup

    for label, value in [
        ("claim", claim),
        ("claim_hash", claim_hash),
        ("rotate", rotate),
        ("revoke", revoke),
        ("leaf_hashes", b"".join(leaf_hash(x) for x in leaves)),
        ("root", root),
        ("inclusion_1_of_3", b"".join(path(1, leaves))),
        ("consistency_2_to_3", b"".join(subproof(2, leaves, True))),
        ("key_id", key_id),
        ("verifier_key", verifier),
        ("checkpoint", note.encode()),
        ("lookup_frame", frame),
    ]:
        print(label, value if isinstance(value, str) else value.hex())


main()
