#!/usr/bin/env python3
"""The managed-keys test vectors of docs/SERVICES.md, computed from that page alone.

Derives an envelope's seal key (blake3 in key-derivation mode) from an
OPAQUE export key, seals an identity's secret (XChaCha20-Poly1305, from
scripts/backup-vectors.py, which checks it on the draft's published vector),
encodes a wire message, a session MAC (keyed blake3) and a recovery code
(base32), from the byte layouts SERVICES.md describes, not from the Rust
code. Prints one `name value` line per vector, which keys/src/envelope.rs
(`python_vectors_agree`) compares with its constants.

OPAQUE itself (RFC 9807) is not recomputed here: opaque-ke runs the RFC's own
test vectors.

Needs Python 3 with the `blake3` and `cryptography` modules:
    pip install blake3 cryptography
Usage: python3 scripts/keys-vectors.py
"""

import base64
import importlib.util
import os
import struct
import sys

try:
    import blake3
except ImportError as error:  # the caller prints a skip reason
    print(f"missing module: {error.name}", file=sys.stderr)
    sys.exit(3)

spec = importlib.util.spec_from_file_location(
    "backup_vectors", os.path.join(os.path.dirname(os.path.abspath(__file__)), "backup-vectors.py")
)
backup_vectors = importlib.util.module_from_spec(spec)
spec.loader.exec_module(backup_vectors)  # exits 3 itself if `cryptography` is missing
xchacha20poly1305 = backup_vectors.xchacha20poly1305

# SERVICES.md "Managed keys".
VERSION = 1
SEAL_KEY_CONTEXT = "peers-keys v1 envelope seal key"
MAC_KEY_CONTEXT = "peers-keys v1 session mac key"
AD_PREFIX = b"peers-keys envelope"

# SERVICES.md "Managed keys: test vectors": the inputs.
EXPORT_KEY = bytes(range(64))
USER = b"alice"
SLOT = 1
SECRET = bytes([0x22] * 32)
NONCE = bytes(range(24))
SESSION_KEY = bytes([0x55] * 64)
RECOVERY = bytes(range(20))


def message(tag, fields):
    body = bytes([tag, len(fields)])
    for field in fields:
        body += struct.pack("<H", len(field)) + field
    return body


def main():
    seal_key = blake3.blake3(EXPORT_KEY, derive_key_context=SEAL_KEY_CONTEXT).digest()
    ad = AD_PREFIX + bytes([VERSION, SLOT, len(USER)]) + USER
    envelope = bytes([VERSION, SLOT]) + NONCE + xchacha20poly1305(seal_key, NONCE, SECRET, ad)

    # LOGIN_START: user, slot, a stand-in for OPAQUE's 96-byte credential request.
    login_start = message(3, [USER, bytes([SLOT]), bytes([0xAA] * 96)])
    frame = struct.pack("<I", len(login_start)) + login_start

    # FORGET, the client's first MACed message (direction 1, counter 0).
    mac_key = blake3.blake3(SESSION_KEY, derive_key_context=MAC_KEY_CONTEXT).digest()
    forget = message(7, [])
    mac = blake3.blake3(bytes([1]) + struct.pack("<Q", 0) + forget, key=mac_key).digest()
    forget_sealed = message(7, [mac])

    letters = base64.b32encode(RECOVERY).decode().rstrip("=")
    recovery = "-".join(letters[i : i + 4] for i in range(0, len(letters), 4))

    for label, value in [
        ("seal_key", seal_key),
        ("envelope", envelope),
        ("login_start_frame", frame),
        ("mac_key", mac_key),
        ("forget_sealed", forget_sealed),
        ("recovery_code", recovery),
    ]:
        print(label, value if isinstance(value, str) else value.hex())


main()
