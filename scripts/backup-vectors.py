#!/usr/bin/env python3
"""The backup test vectors of docs/SERVICES.md, computed from that page alone.

Derives the name and seal keys (blake3 in key-derivation mode), an object
name (keyed blake3), a sealed object (XChaCha20-Poly1305: HChaCha20 written
out here, then the IETF ChaCha20-Poly1305 of the `cryptography` module) and
a signed manifest (ed25519), from the byte layouts SERVICES.md describes, not
from the Rust code. Prints one `name hex` line per value, which
backup/src/format.rs (`python_vectors_agree`) compares with its constants (and they with
SERVICES.md).

Needs Python 3 with the `blake3` and `cryptography` modules:
    pip install blake3 cryptography
Usage: python3 scripts/backup-vectors.py
"""

import struct
import sys

try:
    import blake3
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
except ImportError as error:  # the caller prints a skip reason
    print(f"missing module: {error.name}", file=sys.stderr)
    sys.exit(3)

# SERVICES.md "Keys" and "Objects".
NAME_KEY_CONTEXT = "peers-backup v1 object name key"
SEAL_KEY_CONTEXT = "peers-backup v1 object seal key"
SIGNATURE_DOMAIN = b"peers-backup v1 manifest\0"
OBJECT_MAGIC = b"PEERSBAK"
MANIFEST_MAGIC = b"PEERSMAN"
VERSION = 1

# SERVICES.md "Test vectors": the inputs.
BACKUP_KEY = bytes([0x33] * 32)
DATABASE = bytes([0x11] * 32)
DEVICE_SECRET = bytes([0x22] * 32)
NONCE = bytes(range(24))
# FORMAT.md's wal test vector: a segment of base 0 holding "hello" and "".
SEGMENT = bytes.fromhex(
    "504545525357414c01000000000000000000000000000000789617c5000000000500"
    "0000a1b1174e68656c6c6f00000000c74b6748"
)


def derive_key(context, material):
    return blake3.blake3(material, derive_key_context=context).digest()


def rotl(value, shift):
    return ((value << shift) & 0xFFFFFFFF) | (value >> (32 - shift))


def quarter_round(state, a, b, c, d):
    state[a] = (state[a] + state[b]) & 0xFFFFFFFF
    state[d] = rotl(state[d] ^ state[a], 16)
    state[c] = (state[c] + state[d]) & 0xFFFFFFFF
    state[b] = rotl(state[b] ^ state[c], 12)
    state[a] = (state[a] + state[b]) & 0xFFFFFFFF
    state[d] = rotl(state[d] ^ state[a], 8)
    state[c] = (state[c] + state[d]) & 0xFFFFFFFF
    state[b] = rotl(state[b] ^ state[c], 7)


def hchacha20(key, nonce16):
    """draft-irtf-cfrg-xchacha section 2.2: the ChaCha20 rounds without the
    final addition; words 0-3 and 12-15 are the subkey."""
    state = list(struct.unpack("<4I", b"expand 32-byte k"))
    state += list(struct.unpack("<8I", key))
    state += list(struct.unpack("<4I", nonce16))
    for _ in range(10):
        quarter_round(state, 0, 4, 8, 12)
        quarter_round(state, 1, 5, 9, 13)
        quarter_round(state, 2, 6, 10, 14)
        quarter_round(state, 3, 7, 11, 15)
        quarter_round(state, 0, 5, 10, 15)
        quarter_round(state, 1, 6, 11, 12)
        quarter_round(state, 2, 7, 8, 13)
        quarter_round(state, 3, 4, 9, 14)
    return struct.pack("<8I", *(state[0:4] + state[12:16]))


def xchacha20poly1305(key, nonce24, plaintext, aad):
    subkey = hchacha20(key, nonce24[:16])
    return ChaCha20Poly1305(subkey).encrypt(b"\0" * 4 + nonce24[16:], plaintext, aad)


def object_name(name_key, kind, device, number):
    directory = {1: "segments", 2: "tails", 3: "manifests"}[kind]
    tag = blake3.blake3(bytes([kind]) + device + struct.pack("<Q", number), key=name_key)
    return f"{directory}/{tag.hexdigest()}"


def seal(seal_key, database, name, plaintext, nonce):
    name_bytes = name.encode()
    aad = OBJECT_MAGIC + struct.pack("<I", VERSION) + database
    aad += struct.pack("<I", len(name_bytes)) + name_bytes
    header = OBJECT_MAGIC + struct.pack("<I", VERSION) + nonce
    return header + xchacha20poly1305(seal_key, nonce, plaintext, aad)


def main():
    # RFC 8439 section 2.8.2 and draft-irtf-cfrg-xchacha A.3.1: the AEAD as
    # written here, checked on the published vectors first.
    rfc_key = bytes(range(0x80, 0xA0))
    sunscreen = (
        b"Ladies and Gentlemen of the class of '99: If I could offer you only one tip "
        b"for the future, sunscreen would be it."
    )
    aad = bytes.fromhex("50515253c0c1c2c3c4c5c6c7")
    xnonce = bytes(range(0x40, 0x58))
    sealed = xchacha20poly1305(rfc_key, xnonce, sunscreen, aad)
    assert sealed[-16:].hex() == "c0875924c1c7987947deafd8780acf49", "XChaCha20-Poly1305 tag (draft A.3.1)"
    assert sealed[:8].hex() == "bd6d179d3e83d43b", "XChaCha20-Poly1305 ciphertext (draft A.3.1)"

    name_key = derive_key(NAME_KEY_CONTEXT, BACKUP_KEY)
    seal_key = derive_key(SEAL_KEY_CONTEXT, BACKUP_KEY)
    private = Ed25519PrivateKey.from_private_bytes(DEVICE_SECRET)
    device = private.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    segment_name = object_name(name_key, 1, device, 0)
    tail_name = object_name(name_key, 2, device, 3)
    manifest_name = object_name(name_key, 3, device, 3)
    sealed_segment = seal(seal_key, DATABASE, segment_name, SEGMENT, NONCE)

    # SERVICES.md "Manifest": run 3 of the device, two entries.
    body = MANIFEST_MAGIC + struct.pack("<I", VERSION) + DATABASE + device
    body += struct.pack("<QQ", 3, 1764288000000)
    body += struct.pack("<I", 2)
    # entry: kind, base, offset, bytes, run, blake3
    body += bytes([1]) + struct.pack("<QQQQ", 0, 0, len(SEGMENT), 0) + blake3.blake3(SEGMENT).digest()
    tail = SEGMENT  # a tail piece of the same bytes: the next segment, offset 0, from run 3
    body += bytes([2]) + struct.pack("<QQQQ", len(SEGMENT), 0, len(tail), 3) + blake3.blake3(tail).digest()
    signature = private.sign(SIGNATURE_DOMAIN + body)
    manifest = body + signature
    sealed_manifest = seal(seal_key, DATABASE, manifest_name, manifest, NONCE)

    for label, value in [
        ("name_key", name_key),
        ("seal_key", seal_key),
        ("device", device),
        ("segment_name", segment_name),
        ("tail_name", tail_name),
        ("manifest_name", manifest_name),
        ("sealed_segment", sealed_segment),
        ("manifest", manifest),
        ("sealed_manifest_blake3", blake3.blake3(sealed_manifest).digest()),
    ]:
        print(label, value if isinstance(value, str) else value.hex())


if __name__ == "__main__":  # scripts/keys-vectors.py imports the AEAD from here
    main()
