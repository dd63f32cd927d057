#!/usr/bin/env python3
"""The blind sync buffer's test vectors of docs/SERVICES.md, computed from
that page alone.

Derives the buffer key (blake3 in key-derivation mode), a space's seed,
tag (the ed25519 public key of that seed), seal and nonce keys (keyed
blake3), seals an envelope (padding; nonce a keyed blake3 of the padded
plaintext; XChaCha20-Poly1305 as scripts/backup-vectors.py computes it:
HChaCha20 written out, then the IETF ChaCha20-Poly1305 of `cryptography`), and encodes a put (its
signature by the space key), a get and a get's answer, and names the object
a server files the answer's envelope as (its tag, time buckets and leaf),
from the byte layouts SERVICES.md describes, not from the Rust code. Prints one `name hex` line per
value, which buffer/src/format.rs (`python_vectors_agree`) compares with the
crate's (and `vectors_match_services_doc` with SERVICES.md).

Needs Python 3 with the `blake3` and `cryptography` modules:
    pip install blake3 cryptography
Usage: python3 scripts/buffer-vectors.py
"""

import importlib.util
import os
import struct
import sys

try:
    import blake3
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
except ImportError as error:  # the caller prints a skip reason
    print(f"missing module: {error.name}", file=sys.stderr)
    sys.exit(3)

# XChaCha20-Poly1305 (HChaCha20 written out, checked against the draft's
# example) is the backup script's: one copy.
spec = importlib.util.spec_from_file_location(
    "backup_vectors", os.path.join(os.path.dirname(os.path.abspath(__file__)), "backup-vectors.py")
)
backup_vectors = importlib.util.module_from_spec(spec)
spec.loader.exec_module(backup_vectors)  # exits 3 itself if `cryptography` is missing
xchacha20poly1305 = backup_vectors.xchacha20poly1305

# SERVICES.md "Blind sync buffer": keys, envelope, wire.
BUFFER_KEY_CONTEXT = "peers-buffer v1 buffer key"
PUT_DOMAIN = b"peers-buffer v1 put\0"
ENVELOPE_MAGIC = b"PEERSENV"
VERSION = 2
PADDED_MIN = 256

# SERVICES.md "Test vectors (buffer)": the inputs.
DATABASE = bytes([0x11] * 32)
EPOCH = 2900
CHANGE = b"hello, buffer"
RECEIVED_MS = 1764288000000
EXPIRY_MS = 1765497600000
CURSOR_HASH = bytes([0x44] * 32)
GET_MAX = 256


def mac(key, label, epoch):
    return blake3.blake3(label + struct.pack("<Q", epoch), key=key).digest()


def padded_size(length):
    size = 1
    while size < length + 4:
        size *= 2
    return max(size, PADDED_MIN)


def main():
    buffer_key = blake3.blake3(DATABASE, derive_key_context=BUFFER_KEY_CONTEXT).digest()
    seed = mac(buffer_key, b"space", EPOCH)
    writer = Ed25519PrivateKey.from_private_bytes(seed)
    tag = writer.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    seal_key = mac(buffer_key, b"seal", EPOCH)
    nonce_key = mac(buffer_key, b"nonce", EPOCH)

    plaintext = struct.pack("<I", len(CHANGE)) + CHANGE
    plaintext += b"\0" * (padded_size(len(CHANGE)) - len(plaintext))
    nonce = blake3.blake3(plaintext, key=nonce_key).digest()[:24]
    aad = ENVELOPE_MAGIC + struct.pack("<I", VERSION) + tag
    envelope = ENVELOPE_MAGIC + struct.pack("<I", VERSION) + nonce
    envelope += xchacha20poly1305(seal_key, nonce, plaintext, aad)
    envelope_hash = blake3.blake3(envelope).digest()

    message = PUT_DOMAIN + tag + struct.pack("<H", 1) + envelope_hash
    signature = writer.sign(message)
    put = bytes([VERSION, 1]) + tag + struct.pack("<H", 1)
    put += struct.pack("<I", len(envelope)) + envelope + signature

    get = bytes([VERSION, 2]) + tag + struct.pack("<Q", RECEIVED_MS) + CURSOR_HASH
    get += struct.pack("<H", GET_MAX)

    answer = bytes([VERSION, 0, 2]) + struct.pack("<H", 1)
    answer += struct.pack("<QQI", RECEIVED_MS, EXPIRY_MS, len(envelope)) + envelope
    answer += bytes([0])

    # The store: {hex(tag)}/{R[0:10]}/{R[10:12]}/{R[12:14]}/{R}-{hex(hash)}-{E},
    # R and E the received and expiry times as 16 lowercase hex digits.
    received = f"{RECEIVED_MS:016x}"
    object_name = "/".join(
        [tag.hex(), received[:10], received[10:12], received[12:14]]
        + [f"{received}-{envelope_hash.hex()}-{EXPIRY_MS:016x}"]
    )

    for label, value in [
        ("buffer_key", buffer_key),
        ("space_seed", seed),
        ("tag", tag),
        ("seal_key", seal_key),
        ("nonce_key", nonce_key),
        ("envelope", envelope),
        ("envelope_hash", envelope_hash),
        ("put", put),
        ("get", get),
        ("answer", answer),
    ]:
        print(label, value.hex())
    print("object_name", object_name)


if __name__ == "__main__":
    main()
