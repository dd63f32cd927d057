#!/usr/bin/env python3
"""The change test vectors of docs/FORMAT.md, computed from that page alone.

Builds each vector's body from the byte layout FORMAT.md "Change" describes
(varints, options, lists, enums by variant index), not from the Rust encoder,
then its hash (blake3 in key-derivation mode with the documented context) and
its ed25519 signature by the documented secret key (32 bytes of 0x01) over the
documented signature message. Prints one `name hex` line per value, which
engine/tests/format_vectors.rs compares with its constants (and they with
FORMAT.md).

Needs Python 3 with the `blake3` and `cryptography` modules:
    pip install blake3 cryptography
Usage: python3 scripts/format-vectors.py
"""

import struct
import sys

try:
    import blake3
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
except ImportError as error:  # the caller prints a skip reason
    print(f"missing module: {error.name}", file=sys.stderr)
    sys.exit(3)

# FORMAT.md "Change": the hash context and the signature domain.
HASH_CONTEXT = "peers 2026-11-28 change hash v1"
SIGNATURE_DOMAIN = b"peers change signature v1\0"
assert len(SIGNATURE_DOMAIN) == 26, "FORMAT.md: the 26-byte domain"


def varint(n):
    """FORMAT.md's varint: the shortest of the four forms."""
    assert n >= 0
    if n <= 250:
        return bytes([n])
    if n < 1 << 16:
        return b"\xfb" + n.to_bytes(2, "little")
    if n < 1 << 32:
        return b"\xfc" + n.to_bytes(4, "little")
    return b"\xfd" + n.to_bytes(8, "little")


def zigzag(n):
    """A signed i64: zigzag-mapped as FORMAT.md writes it, then a varint."""
    assert -(1 << 63) <= n < 1 << 63
    return varint(((n << 1) ^ (n >> 63)) & ((1 << 64) - 1))


def string(s):
    raw = s.encode("utf-8")
    return varint(len(raw)) + raw


def option(value):
    return b"\x00" if value is None else b"\x01" + value


def listof(items):
    return varint(len(items)) + b"".join(items)


def fixed(byte, count=32):
    return bytes([byte]) * count


# op = variant index | fields in order
def op_set(table, row, field, value):
    return varint(0) + string(table) + string(row) + string(field) + value


def op_delete(table, row):
    return varint(1) + string(table) + string(row)


def op_increment(table, row, field, delta):
    return varint(2) + string(table) + string(row) + string(field) + zigzag(delta)


def op_genesis(nonce):
    assert len(nonce) == 16
    return varint(3) + nonce


ROLES = {"Reader": 0, "Writer": 1, "Admin": 2, "Owner": 3}


def op_grant(key, role):
    return varint(4) + key + varint(ROLES[role])


def op_revoke(key, last_seq):
    return varint(5) + key + varint(last_seq)


def op_members_only():
    return varint(6)


def op_checkpoint(frontier, snapshot):
    # frontier: (author[32], seq, hash[32]) sorted by author; snapshot[32]
    assert len(snapshot) == 32
    entries = [a + varint(seq) + h for (a, seq, h) in frontier]
    return varint(7) + listof(entries) + snapshot


def value_str(s):
    return varint(5) + string(s)


def body(version, database, author, seq, prev, deps, lamport, wall_ms, ops):
    assert len(database) == 32 and len(author) == 32
    return (
        varint(version)
        + database
        + author
        + varint(seq)
        + option(prev)
        + listof(deps)
        + varint(lamport)
        + varint(wall_ms)
        + listof(ops)
    )


def crc32c(data, crc=0):
    """FORMAT.md "Conventions" (wal): CRC-32C, reflected polynomial 0x82F63B78."""
    crc ^= 0xFFFFFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
    return crc ^ 0xFFFFFFFF


assert crc32c(b"123456789") == 0xE3069283, "FORMAT.md: crc32c's check value"

SNAPSHOT_CONTEXT = "peers 2026-12-03 snapshot v1"


def snapshot_hash(database, frontier, entries):
    """FORMAT.md "Frontier, closure, snapshot hash"."""
    material = database + listof([e[0] + varint(e[1]) + e[2] for e in frontier])
    for key, value in entries:
        material += struct.pack("<Q", len(key)) + key + struct.pack("<Q", len(value)) + value
    return blake3.blake3(material, derive_key_context=SNAPSHOT_CONTEXT).digest()


def snapshot_file(database, checkpoint, genesis, blocks):
    """FORMAT.md "Snapshot file, format 1"; `blocks` is a list of entry lists."""
    header = b"PEERSNAP" + struct.pack("<II", 1, 0) + database
    for change in (checkpoint, genesis):
        header += struct.pack("<I", len(change)) + change
    out = header + struct.pack("<I", crc32c(header))
    count = 0
    for entries in blocks:
        payload = varint(len(entries))
        for key, value in entries:
            payload += varint(len(key)) + key + varint(len(value)) + value
        length = struct.pack("<I", len(payload))
        out += length + struct.pack("<I", crc32c(payload, crc32c(length))) + payload
        count += len(entries)
    end = struct.pack("<IQ", 0, count)
    return out + end + struct.pack("<I", crc32c(end))


def main():
    secret = Ed25519PrivateKey.from_private_bytes(fixed(0x01))
    author = secret.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    wall_ms = 1764288000000

    genesis = body(
        2,
        fixed(0x00),
        author,
        1,
        None,
        [],
        1,
        wall_ms,
        [op_genesis(fixed(0x07, 16)), op_members_only()],
    )
    genesis_hash = blake3.blake3(genesis, derive_key_context=HASH_CONTEXT).digest()

    vectors = {
        # FORMAT.md "Test vector: a change (format 1, still read)".
        "change": body(
            1,
            fixed(0xAA),
            author,
            2,
            fixed(0xBB),
            [fixed(0xCC)],
            300,
            wall_ms,
            [
                op_set("t", "r", "f", value_str("hi")),
                op_increment("t", "r", "n", -2),
                op_delete("t", "x"),
            ],
        ),
        # FORMAT.md "Test vector: a membership change (format 2)".
        "membership": body(
            2,
            fixed(0xAA),
            author,
            3,
            fixed(0xBB),
            [],
            4,
            wall_ms,
            [op_grant(fixed(0x11), "Writer"), op_revoke(fixed(0x22), 7)],
        ),
        # FORMAT.md "Test vector: a genesis change (format 2)".
        "genesis": genesis,
        # FORMAT.md "Test vector: a checkpoint change (format 3)": the owner
        # of that genesis checkpoints it (the snapshot hash is arbitrary).
        "checkpoint": body(
            3,
            genesis_hash,
            author,
            2,
            genesis_hash,
            [],
            2,
            wall_ms,
            [op_checkpoint([(author, 1, genesis_hash)], fixed(0x5A))],
        ),
    }

    print(f"author {author.hex()}")
    for name, raw in vectors.items():
        digest = blake3.blake3(raw, derive_key_context=HASH_CONTEXT).digest()
        signature = secret.sign(SIGNATURE_DOMAIN + digest)
        print(f"{name}.body {raw.hex()}")
        print(f"{name}.hash {digest.hex()}")
        print(f"{name}.signature {signature.hex()}")

    # FORMAT.md "Test vector: a snapshot file": two entries (arbitrary
    # bytes: the vector is of the file, not of a view), signed for by a
    # checkpoint of the genesis like the one above.
    entries = [(b"\x02t\x00r\x00f", b"\x01hi"), (b"\x05" + genesis_hash, b"\x2a")]
    frontier = [(author, 1, genesis_hash)]
    digest = snapshot_hash(genesis_hash, frontier, entries)
    checkpoint = body(3, genesis_hash, author, 2, genesis_hash, [], 2, wall_ms, [op_checkpoint(frontier, digest)])
    checkpoint_hash = blake3.blake3(checkpoint, derive_key_context=HASH_CONTEXT).digest()
    signed = checkpoint + secret.sign(SIGNATURE_DOMAIN + checkpoint_hash)
    genesis_signed = genesis + secret.sign(
        SIGNATURE_DOMAIN + blake3.blake3(genesis, derive_key_context=HASH_CONTEXT).digest()
    )
    file = snapshot_file(genesis_hash, signed, genesis_signed, [entries])
    print(f"snapshot.hash {digest.hex()}")
    print(f"snapshot.checkpoint {checkpoint_hash.hex()}")
    print(f"snapshot.file {file.hex()}")
    print(f"snapshot.file_blake3 {blake3.blake3(file).digest().hex()}")


if __name__ == "__main__":
    main()
