#!/usr/bin/env python3
"""Computes the signaling test vectors independently of the Rust code.

Used by signal/src/seal.rs (`sealed_payload_vector`, `register_vector`) and quoted
in docs/PROTOCOL.md "Signaling". Needs Python 3 with `cryptography` (X25519,
Ed25519, ChaCha20Poly1305) and `blake3`. XChaCha20-Poly1305 is not in
`cryptography`, so it is composed here as the spec defines it
(draft-irtf-cfrg-xchacha): HChaCha20(key, nonce[0:16]) gives a subkey, then
IETF ChaCha20-Poly1305 with nonce 00000000 || nonce[16:24]. The ed25519 to X25519
public key conversion is the birational map u = (1 + y) / (1 - y) mod p, written out.

Run from this directory: python3 signal_vectors.py   (writes the .hex files, prints them)
"""
import hashlib
import struct

import blake3
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

RAW = (Encoding.Raw, PublicFormat.Raw)
P = 2**255 - 19


def rotl(v, c):
    return ((v << c) & 0xFFFFFFFF) | (v >> (32 - c))


def quarter(s, a, b, c, d):
    s[a] = (s[a] + s[b]) & 0xFFFFFFFF; s[d] = rotl(s[d] ^ s[a], 16)
    s[c] = (s[c] + s[d]) & 0xFFFFFFFF; s[b] = rotl(s[b] ^ s[c], 12)
    s[a] = (s[a] + s[b]) & 0xFFFFFFFF; s[d] = rotl(s[d] ^ s[a], 8)
    s[c] = (s[c] + s[d]) & 0xFFFFFFFF; s[b] = rotl(s[b] ^ s[c], 7)


def hchacha20(key, nonce16):
    s = list(struct.unpack("<4I", b"expand 32-byte k")) + list(struct.unpack("<8I", key)) + list(struct.unpack("<4I", nonce16))
    for _ in range(10):
        quarter(s, 0, 4, 8, 12); quarter(s, 1, 5, 9, 13); quarter(s, 2, 6, 10, 14); quarter(s, 3, 7, 11, 15)
        quarter(s, 0, 5, 10, 15); quarter(s, 1, 6, 11, 12); quarter(s, 2, 7, 8, 13); quarter(s, 3, 4, 9, 14)
    return struct.pack("<8I", *(s[0:4] + s[12:16]))


def xchacha20poly1305_encrypt(key, nonce24, plaintext, aad):
    subkey = hchacha20(key, nonce24[:16])
    return ChaCha20Poly1305(subkey).encrypt(b"\0\0\0\0" + nonce24[16:], plaintext, aad)


def ed25519_public_to_x25519(public):
    y = int.from_bytes(public, "little") & ((1 << 255) - 1)
    u = (1 + y) * pow(1 - y, P - 2, P) % P
    return u.to_bytes(32, "little")


# RFC draft-irtf-cfrg-xchacha A.3.1 test vector for the composition above.
_k = bytes(range(0x80, 0xA0))
_n = bytes.fromhex("404142434445464748494a4b4c4d4e4f5051525354555657")
_aad = bytes.fromhex("50515253c0c1c2c3c4c5c6c7")
_pt = b"Ladies and Gentlemen of the class of '99: If I could offer you only one tip for the future, sunscreen would be it."
assert xchacha20poly1305_encrypt(_k, _n, _pt, _aad).hex().endswith("c0875924c1c7987947deafd8780acf49"), "XChaCha20 composition"

sender_seed, recipient_seed = bytes([0x01]) * 32, bytes([0x02]) * 32
sender = Ed25519PrivateKey.from_private_bytes(sender_seed)
recipient = Ed25519PrivateKey.from_private_bytes(recipient_seed)
sender_public = sender.public_key().public_bytes(*RAW)
recipient_public = recipient.public_key().public_bytes(*RAW)

# Register frame: type 02 | version u16 LE | key | ed25519 over domain || nonce.
challenge_nonce = bytes([0x11]) * 32
register = bytes([0x02]) + struct.pack("<H", 1) + sender_public + sender.sign(b"peers signal register v1\0" + challenge_nonce)

# Sealed payload with fixed ephemeral secret and nonce.
ephemeral_secret = X25519PrivateKey.from_private_bytes(bytes([0x03]) * 32)
ephemeral = ephemeral_secret.public_key().public_bytes(*RAW)
nonce = bytes([0x04]) * 24
instance, counter, timestamp_ms, body = bytes([0x05]) * 16, 7, 1_767_225_600_000, b"hello"
recipient_x = ed25519_public_to_x25519(recipient_public)
shared = ephemeral_secret.exchange(X25519PublicKey.from_public_bytes(recipient_x))
# The recipient's side: its ed25519 secret scalar bytes (SHA-512 of the seed, first half) as an X25519 secret.
recipient_x_secret = X25519PrivateKey.from_private_bytes(hashlib.sha512(recipient_seed).digest()[:32])
assert recipient_x_secret.public_key().public_bytes(*RAW) == recipient_x, "conversion"
assert recipient_x_secret.exchange(X25519PublicKey.from_public_bytes(ephemeral)) == shared, "agreement"
key = blake3.blake3(shared + ephemeral + recipient_x, derive_key_context="peers signal seal v1").digest()
unsigned = instance + struct.pack("<QQ", counter, timestamp_ms) + body
signature = sender.sign(b"peers signal payload v1\0" + recipient_public + ephemeral + unsigned)
ciphertext = xchacha20poly1305_encrypt(key, nonce, unsigned + signature, sender_public + recipient_public)
sealed = bytes([0x01]) + ephemeral + nonce + ciphertext

for name, value in [
    ("sender public (seed 01x32)", sender_public),
    ("recipient public (seed 02x32)", recipient_public),
    ("recipient X25519", recipient_x),
    ("ephemeral public (secret 03x32)", ephemeral),
    ("shared", shared),
    ("payload key", key),
]:
    print(f"{name}: {value.hex()}")
print(f"register frame: {register.hex()}")
print(f"sealed payload ({len(sealed)} bytes): {sealed.hex()}")
with open("register_frame.hex", "w") as f:
    f.write(register.hex())
with open("sealed_payload.hex", "w") as f:
    f.write(sealed.hex())
