//! Signatures: ed25519 under Peers' strict rules (FORMAT.md "Signature"),
//! checked in batches, and spread over the cores for large sets.
//!
//! Every path that checks a change's signature comes here: received changes
//! ([`verify`], with a worker per chunk in `Db::apply`'s pipeline), a full
//! re-check of the log ([`verify_parallel`]), and the handshake's proof
//! ([`verify_ed25519_strict`]).

use crate::HashMap;

use ed25519_dalek::{Signature, VerifyingKey};

use crate::change::{Change, ChangeHash, SIGNATURE_BYTES, signed_message};
use crate::error::Refusal;

/// Changes refused, with why (`ApplyReport::refused`).
pub(crate) type Refused = Vec<(Option<ChangeHash>, Refusal)>;

/// Sets at least this large are spread over threads ([`fan_out`]).
pub(crate) const PARALLEL_CHANGES_MIN: usize = 512;

/// Why a signature was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SignatureFault {
    /// The author key is not a canonical encoding of a point, or is small-order.
    #[error("author key is not a valid, canonical, full-order ed25519 key")]
    WeakKey,
    /// R is non-canonical or small-order, or s is not reduced.
    #[error("signature is not in strict canonical form")]
    NonCanonical,
    /// The verification equation fails.
    #[error("signature does not verify")]
    Mismatch,
}

/// The y-coordinates (sign bit cleared) of the eight small-order points.
fn small_order_ys() -> &'static [[u8; 32]] {
    static YS: std::sync::OnceLock<Vec<[u8; 32]>> = std::sync::OnceLock::new();
    YS.get_or_init(|| {
        let mut ys: Vec<[u8; 32]> = curve25519_dalek::constants::EIGHT_TORSION
            .iter()
            .map(|point| {
                let mut y = point.compress().to_bytes();
                y[31] &= 0x7f;
                y
            })
            .collect();
        ys.sort_unstable();
        ys.dedup();
        ys
    })
}

/// Whether 32 bytes are a canonical point encoding (y < p) that is not one
/// of the small-order points, whatever the sign bit. Byte checks only: this
/// is `verify_strict`'s "canonical and not small order" without the cost of
/// decompressing (a point off the curve fails later, in every path alike).
fn strict_point_bytes(bytes: &[u8; 32]) -> bool {
    let mut y = *bytes;
    y[31] &= 0x7f;
    // p = 2^255 - 19 is ed ff .. ff 7f little endian; y >= p iff y is
    // 7f ff .. ff in bytes 1..=31 and byte 0 >= 0xed.
    let at_least_p = y[31] == 0x7f && y[1..31].iter().all(|&byte| byte == 0xff) && y[0] >= 0xed;
    !at_least_p && !small_order_ys().contains(&y)
}

/// Checks the `verify_strict` preconditions and returns the key and signature.
///
/// Every path (batch or single) runs these first and then the same
/// cofactored equation (`verify_batch`), so every replica reaches the same
/// verdict on every signature, whichever path checked it.
fn strict_parts(
    key_bytes: &[u8; 32],
    signature_bytes: &[u8; SIGNATURE_BYTES],
    keys: &mut HashMap<[u8; 32], VerifyingKey>,
) -> Result<(VerifyingKey, Signature), SignatureFault> {
    let key = match keys.get(key_bytes) {
        Some(key) => *key,
        None => {
            if !strict_point_bytes(key_bytes) {
                return Err(SignatureFault::WeakKey);
            }
            let key = VerifyingKey::from_bytes(key_bytes).map_err(|_| SignatureFault::WeakKey)?;
            keys.insert(*key_bytes, key);
            key
        }
    };
    let signature = Signature::from_bytes(signature_bytes);
    if !strict_point_bytes(signature.r_bytes()) {
        return Err(SignatureFault::NonCanonical);
    }
    // s must be reduced mod l (verify_strict's scalar check).
    if curve25519_dalek::Scalar::from_canonical_bytes(*signature.s_bytes())
        .is_none()
        .into()
    {
        return Err(SignatureFault::NonCanonical);
    }
    Ok((key, signature))
}

/// Verifies one change's signature under the strict rules.
pub fn verify_signature(change: &Change) -> Result<(), SignatureFault> {
    verify_signatures(std::slice::from_ref(change)).map_err(|(_, fault)| fault)
}

/// Verifies the signatures of `changes` as one batch; on failure, names the
/// first bad change (by index) and why, found by checking each one alone.
pub fn verify_signatures(changes: &[Change]) -> Result<(), (usize, SignatureFault)> {
    let messages: Vec<[u8; 58]> = changes
        .iter()
        .map(|change| signed_message(&change.hash()))
        .collect();
    let authors: Vec<[u8; 32]> = changes.iter().map(|change| change.author().0).collect();
    let items: Vec<(&[u8], &[u8; 32], &[u8; SIGNATURE_BYTES])> = changes
        .iter()
        .zip(&messages)
        .zip(&authors)
        .map(|((change, message), author)| (message.as_slice(), author, change.signature()))
        .collect();
    verify_ed25519_strict(&items)
}

/// ed25519 under Peers' rules for `(message, public key, signature)` items:
/// `verify_strict`'s preconditions (canonical, not small-order key and R;
/// reduced s), then the cofactored equation, checked as one batch. On
/// failure, names the first bad item by checking each alone (a batch of
/// one: the same equation), so a batch and single checks always agree.
pub fn verify_ed25519_strict(
    items: &[(&[u8], &[u8; 32], &[u8; SIGNATURE_BYTES])],
) -> Result<(), (usize, SignatureFault)> {
    let mut keys = Vec::with_capacity(items.len());
    let mut key_cache = HashMap::default();
    let mut signatures = Vec::with_capacity(items.len());
    for (index, (_, key_bytes, signature_bytes)) in items.iter().enumerate() {
        let (key, signature) = strict_parts(key_bytes, signature_bytes, &mut key_cache)
            .map_err(|fault| (index, fault))?;
        keys.push(key);
        signatures.push(signature);
    }
    let messages: Vec<&[u8]> = items.iter().map(|(message, _, _)| *message).collect();
    if cofactored_batch(&messages, &signatures, &keys) {
        return Ok(());
    }
    for index in 0..items.len() {
        let one = cofactored_batch(
            &messages[index..=index],
            &signatures[index..=index],
            &keys[index..=index],
        );
        if !one {
            return Err((index, SignatureFault::Mismatch));
        }
    }
    // A batch fails only if some member fails alone (up to 2^-128): treat the
    // impossible as the whole batch being bad rather than accepting it.
    Err((0, SignatureFault::Mismatch))
}

/// Checks `[8](-sum(z s) B + sum(z R) + sum(z k A)) = 0` with `k = H(R || A || M)`
/// and 128-bit `z` derived from every input (no RNG: every replica computes
/// the same). Multiplying by the cofactor makes the batch equation hold
/// exactly when each `[8](sB - R - kA) = 0` does (up to 2^-128), so a batch
/// and a batch of one agree even for points with a torsion component, on
/// which a cofactorless batch and single check can disagree (ed25519-dalek's
/// `verify_batch` reduces `z k` mod l, which changes a torsion part).
fn cofactored_batch(messages: &[&[u8]], signatures: &[Signature], keys: &[VerifyingKey]) -> bool {
    use curve25519_dalek::traits::{IsIdentity, VartimeMultiscalarMul};
    use curve25519_dalek::{EdwardsPoint, Scalar, constants::ED25519_BASEPOINT_POINT};
    use sha2::Digest;
    debug_assert!(messages.len() == signatures.len() && keys.len() == signatures.len());
    let mut transcript =
        blake3::Hasher::new_derive_key("peers 2026-11-28 ed25519 batch weights v1");
    let mut hrams = Vec::with_capacity(signatures.len());
    for ((message, signature), key) in messages.iter().zip(signatures).zip(keys) {
        let mut hasher = sha2::Sha512::new();
        hasher.update(signature.r_bytes());
        hasher.update(key.as_bytes());
        hasher.update(message);
        let hram: [u8; 64] = hasher.finalize().into();
        transcript.update(&hram);
        transcript.update(signature.s_bytes());
        hrams.push(Scalar::from_bytes_mod_order_wide(&hram));
    }
    let mut weights = transcript.finalize_xof();
    let mut zs = Vec::with_capacity(signatures.len());
    let mut b_coefficient = Scalar::ZERO;
    for signature in signatures {
        let mut bytes = [0u8; 16];
        weights.fill(&mut bytes);
        let z = Scalar::from(u128::from_le_bytes(bytes).max(1));
        let Some(s) = Option::<Scalar>::from(Scalar::from_canonical_bytes(*signature.s_bytes()))
        else {
            return false;
        };
        b_coefficient += z * s;
        zs.push(z);
    }
    let z_hrams: Vec<Scalar> = zs.iter().zip(&hrams).map(|(z, hram)| z * hram).collect();
    let rs = signatures.iter().map(|signature| {
        curve25519_dalek::edwards::CompressedEdwardsY(*signature.r_bytes()).decompress()
    });
    let points = std::iter::once(Some(ED25519_BASEPOINT_POINT))
        .chain(rs)
        .chain(keys.iter().map(|key| Some(key.to_edwards())));
    let scalars = std::iter::once(-b_coefficient).chain(zs).chain(z_hrams);
    match EdwardsPoint::optional_multiscalar_mul(scalars, points) {
        Some(sum) => sum.mul_by_cofactor().is_identity(),
        None => false,
    }
}

/// Checks `changes`' signatures as one batch; the refused ones are left
/// out and added to `refused` (`BadSignature`, each found by checking it
/// alone).
pub(crate) fn verify(changes: Vec<Change>, refused: &mut Refused) -> Vec<Change> {
    if verify_signatures(&changes).is_ok() {
        return changes;
    }
    // The batch failed: check each alone to name every bad change.
    let mut verified = Vec::with_capacity(changes.len());
    for change in changes {
        match verify_signature(&change) {
            Ok(()) => verified.push(change),
            Err(fault) => {
                refused.push((
                    Some(change.hash()),
                    Refusal::BadSignature {
                        author: change.author(),
                        fault,
                    },
                ));
            }
        }
    }
    verified
}

/// [`verify`] on every core for large sets, in order.
pub(crate) fn verify_parallel(changes: Vec<Change>, refused: &mut Refused) -> Vec<Change> {
    let parts: Vec<(Vec<Change>, Refused)> = fan_out(&changes, |part| {
        let mut local = Refused::new();
        let verified = verify(part.to_vec(), &mut local);
        (verified, local)
    });
    let mut verified = Vec::with_capacity(changes.len());
    for (part, local) in parts {
        verified.extend(part);
        refused.extend(local);
    }
    verified
}

/// Maps `items` in chunks, one thread per core when there are at least
/// [`PARALLEL_CHANGES_MIN`] of them (else on this thread), and returns the
/// chunks' results in order: the one fan of work over threads.
pub(crate) fn fan_out<T: Sync, U: Send>(items: &[T], map: impl Fn(&[T]) -> U + Sync) -> Vec<U> {
    let threads = std::thread::available_parallelism().map_or(1, usize::from);
    if items.len() < PARALLEL_CHANGES_MIN || threads < 2 {
        return vec![map(items)];
    }
    let chunk = items.len().div_ceil(threads);
    std::thread::scope(|scope| {
        let handles: Vec<_> = items
            .chunks(chunk)
            .map(|part| scope.spawn(|| map(part)))
            .collect();
        handles
            .into_iter()
            .map(|handle| handle.join().expect("worker does not panic"))
            .collect()
    })
}
