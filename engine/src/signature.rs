//! Signatures: ed25519 under Peers' strict rules (FORMAT.md "Signature"),
//! checked in batches, and spread over the cores by [`in_order`].
//!
//! Every path that checks a change's signature comes here: received changes
//! and a full re-check of the log ([`verify`], in the jobs of `Db::apply`'s
//! pipeline and of `Writer::replay`), and the handshake's proof
//! ([`verify_ed25519_strict`]).

use crate::HashMap;

use ed25519_dalek::{Signature, VerifyingKey};

use crate::change::{Change, ChangeHash, SIGNATURE_BYTES, signed_message};
use crate::error::Refusal;

/// Changes refused, with why (`ApplyReport::refused`).
pub(crate) type Refused = Vec<(Option<ChangeHash>, Refusal)>;

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
/// cofactored equation, so every replica reaches the same
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
    if canonical_s(&signature).is_none() {
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
/// failure, names the first bad item by checking each alone (the same
/// equation for one signature), so a batch and single checks always agree.
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
    let single =
        |index: usize| cofactored_single(messages[index], &signatures[index], &keys[index]);
    match messages.len() {
        0 => return Ok(()),
        1 if single(0) => return Ok(()),
        1 => return Err((0, SignatureFault::Mismatch)),
        _ if cofactored_batch(&messages, &signatures, &keys) => return Ok(()),
        _ => {}
    }
    if let Some(bad) = (0..messages.len()).find(|&index| !single(index)) {
        return Err((bad, SignatureFault::Mismatch));
    }
    // A batch fails only if some member fails alone (up to 2^-128): treat the
    // impossible as the whole batch being bad rather than accepting it.
    Err((0, SignatureFault::Mismatch))
}

/// Checks one signature: `[8](s B - R - k A) = 0` with `k = H(R || A || M)`,
/// `s B - k A` from B's precomputed table. The verdict is a batch of one's:
/// that batch checks `-z` times this point, and with `z` nonzero mod l the
/// cofactor clears the one exactly when it clears the other.
fn cofactored_single(message: &[u8], signature: &Signature, key: &VerifyingKey) -> bool {
    use curve25519_dalek::traits::IsIdentity;
    use curve25519_dalek::{EdwardsPoint, Scalar};
    let k = Scalar::from_bytes_mod_order_wide(&hram(message, signature, key));
    let Some(s) = canonical_s(signature) else {
        return false;
    };
    let Some(r) = curve25519_dalek::edwards::CompressedEdwardsY(*signature.r_bytes()).decompress()
    else {
        return false;
    };
    let minus_a = -key.to_edwards();
    let sum = EdwardsPoint::vartime_double_scalar_mul_basepoint(&k, &minus_a, &s) - r;
    sum.mul_by_cofactor().is_identity()
}

/// `SHA-512(R || A || M)`, the 64-byte digest whose reduction is `k`.
fn hram(message: &[u8], signature: &Signature, key: &VerifyingKey) -> [u8; 64] {
    use sha2::Digest;
    let mut hasher = sha2::Sha512::new();
    hasher.update(signature.r_bytes());
    hasher.update(key.as_bytes());
    hasher.update(message);
    hasher.finalize().into()
}

/// The signature's `s`, if reduced mod l.
fn canonical_s(signature: &Signature) -> Option<curve25519_dalek::Scalar> {
    curve25519_dalek::Scalar::from_canonical_bytes(*signature.s_bytes()).into()
}

/// Checks `[8](-sum(z s) B + sum(z R) + sum(z k A)) = 0` with `k = H(R || A || M)`
/// (one `z k A` term per distinct key, its sum over that key's signatures)
/// and 128-bit `z` derived from every input (no RNG: every replica computes
/// the same). Multiplying by the cofactor makes the batch equation hold
/// exactly when each `[8](sB - R - kA) = 0` does (up to 2^-128), so a batch
/// and a batch of one agree even for points with a torsion component, on
/// which a cofactorless batch and single check can disagree (ed25519-dalek's
/// `verify_batch` reduces `z k` mod l, which changes a torsion part).
fn cofactored_batch(messages: &[&[u8]], signatures: &[Signature], keys: &[VerifyingKey]) -> bool {
    use curve25519_dalek::traits::{IsIdentity, VartimeMultiscalarMul};
    use curve25519_dalek::{EdwardsPoint, Scalar, constants::ED25519_BASEPOINT_POINT};
    debug_assert!(messages.len() == signatures.len() && keys.len() == signatures.len());
    let mut transcript =
        blake3::Hasher::new_derive_key("peers 2026-11-28 ed25519 batch weights v1");
    let mut hrams = Vec::with_capacity(signatures.len());
    for ((message, signature), key) in messages.iter().zip(signatures).zip(keys) {
        let hram = hram(message, signature, key);
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
        let Some(s) = canonical_s(signature) else {
            return false;
        };
        b_coefficient += z * s;
        zs.push(z);
    }
    // One term per distinct key: a replica's changes come from few authors,
    // and `sum(z k) A` over one key's signatures is one point's term. The
    // sums are reduced mod l, which moves only a torsion component of A,
    // and the cofactor clears it: the equation is the same.
    let mut key_terms: Vec<(Scalar, &VerifyingKey)> = Vec::new();
    let mut key_index: HashMap<&[u8; 32], usize> = HashMap::default();
    for ((z, hram), key) in zs.iter().zip(&hrams).zip(keys) {
        let index = *key_index.entry(key.as_bytes()).or_insert_with(|| {
            key_terms.push((Scalar::ZERO, key));
            key_terms.len() - 1
        });
        key_terms[index].0 += z * hram;
    }
    let rs = signatures.iter().map(|signature| {
        curve25519_dalek::edwards::CompressedEdwardsY(*signature.r_bytes()).decompress()
    });
    let points = std::iter::once(Some(ED25519_BASEPOINT_POINT))
        .chain(rs)
        .chain(key_terms.iter().map(|(_, key)| Some(key.to_edwards())));
    let scalars = std::iter::once(-b_coefficient)
        .chain(zs)
        .chain(key_terms.iter().map(|(sum, _)| *sum));
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

/// Items per job of [`in_order`]: a job is small, so that the first results
/// are ready soon and the jobs spread evenly over the cores, but a larger
/// batch verifies each signature for less: a job is a quarter of a core's
/// share of the input, at least [`JOB_ITEMS`] and at most [`JOB_ITEMS_MAX`]
/// (`merge_profile`: 256 was best at 1k changes, 512 at 20k, by 10% and 7%).
const JOB_ITEMS: usize = 256;
/// See [`JOB_ITEMS`].
const JOB_ITEMS_MAX: usize = 512;

/// Jobs of [`in_order`], shared by its threads.
struct Jobs<T, U> {
    /// Each job's items until a thread claims it.
    waiting: Vec<Option<Vec<T>>>,
    /// The next job to claim.
    next: usize,
    /// Each job's result, until handed on.
    done: Vec<Option<U>>,
    /// Set when the consumer failed: no job is claimed after it.
    stop: bool,
}

impl<T, U> Jobs<T, U> {
    fn claim(&mut self) -> Option<(usize, Vec<T>)> {
        if self.stop || self.next == self.waiting.len() {
            return None;
        }
        let index = self.next;
        self.next += 1;
        let items = self.waiting[index].take().expect("a job is claimed once");
        Some((index, items))
    }
}

fn lock<T, U>(jobs: &std::sync::Mutex<Jobs<T, U>>) -> std::sync::MutexGuard<'_, Jobs<T, U>> {
    jobs.lock().expect("no job panics holding the lock")
}

/// Runs one claimed job and files its result.
fn run_job<T, U>(
    jobs: &std::sync::Mutex<Jobs<T, U>>,
    ready: &std::sync::Condvar,
    work: &impl Fn(Vec<T>) -> U,
    (index, items): (usize, Vec<T>),
) {
    let result = work(items);
    lock(jobs).done[index] = Some(result);
    ready.notify_all();
}

/// The cores this process may use, read once: `available_parallelism`
/// reads the cgroup's files on every call (tens of microseconds, on the
/// path of every change a live peer sends alone).
pub(crate) fn cores() -> usize {
    static CORES: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *CORES.get_or_init(|| std::thread::available_parallelism().map_or(1, usize::from))
}

/// Runs `work` over `items` in small jobs on every core, and hands the
/// results to `consume` in order, in runs of consecutive jobs whose
/// `weight`s add up to at most `run_max` (at least one job each).
///
/// The calling thread is one of the workers: when the next result in order
/// is not ready, it runs the next waiting job rather than wait, so `work`
/// (decoding and verifying changes) and `consume` (applying them) share
/// every core, and the first run is ready after one small job. A failing
/// `consume` stops the workers, and its error is returned.
pub(crate) fn in_order<T: Send, U: Send, E>(
    items: Vec<T>,
    work: impl Fn(Vec<T>) -> U + Sync,
    weight: impl Fn(&U) -> usize,
    run_max: usize,
    mut consume: impl FnMut(Vec<U>) -> Result<(), E>,
) -> Result<(), E> {
    use std::sync::{Condvar, Mutex};
    let cores = cores();
    let job_items = (items.len() / (4 * cores)).clamp(JOB_ITEMS, JOB_ITEMS_MAX);
    let mut waiting = Vec::with_capacity(items.len().div_ceil(job_items));
    let mut rest = items.into_iter();
    loop {
        let job: Vec<T> = rest.by_ref().take(job_items).collect();
        if job.is_empty() {
            break;
        }
        waiting.push(Some(job));
    }
    let count = waiting.len();
    let jobs = Mutex::new(Jobs {
        done: (0..count).map(|_| None).collect(),
        waiting,
        next: 0,
        stop: false,
    });
    let ready = Condvar::new();
    let workers = cores.saturating_sub(1).min(count.saturating_sub(1));
    std::thread::scope(|scope| {
        for _ in 0..workers {
            scope.spawn(|| {
                loop {
                    // The guard is dropped before the job runs.
                    let job = lock(&jobs).claim();
                    let Some(job) = job else { break };
                    run_job(&jobs, &ready, &work, job);
                }
            });
        }
        let mut next_in_order = 0;
        while next_in_order < count {
            let mut guard = lock(&jobs);
            if guard.done[next_in_order].is_none() {
                if let Some(job) = guard.claim() {
                    drop(guard);
                    run_job(&jobs, &ready, &work, job);
                    continue;
                }
                while guard.done[next_in_order].is_none() {
                    guard = ready.wait(guard).expect("no job panics holding the lock");
                }
            }
            let mut run = Vec::new();
            let mut run_weight = 0;
            while let Some(Some(result)) = guard.done.get(next_in_order) {
                let result_weight = weight(result);
                if !run.is_empty() && run_weight + result_weight > run_max {
                    break;
                }
                run.push(guard.done[next_in_order].take().expect("present"));
                run_weight += result_weight;
                next_in_order += 1;
            }
            drop(guard);
            if let Err(error) = consume(run) {
                lock(&jobs).stop = true;
                return Err(error);
            }
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every result reaches `consume` once, in order, in runs that hold
    /// whole jobs and stay within `run_max` (one job may exceed it alone).
    #[test]
    fn in_order_hands_every_result_on_in_order_within_run_max() {
        let items: Vec<u32> = (0..5_000).collect();
        let mut seen = Vec::new();
        let mut runs = 0;
        let outcome: Result<(), ()> = in_order(
            items,
            |job: Vec<u32>| job.iter().map(|item| item * 2).collect::<Vec<_>>(),
            Vec::len,
            600,
            |run| {
                let total: usize = run.iter().map(Vec::len).sum();
                assert!(total <= 600 || run.len() == 1, "a run of {total}");
                runs += 1;
                seen.extend(run.into_iter().flatten());
                Ok(())
            },
        );
        assert_eq!(outcome, Ok(()));
        assert_eq!(seen, (0..5_000).map(|item| item * 2).collect::<Vec<_>>());
        assert!(runs >= 5_000 / 600, "{runs} runs");
    }

    /// A failing consumer stops the pipeline: its error is returned and
    /// nothing after it is handed on.
    #[test]
    fn in_order_stops_at_the_consumers_error() {
        let items: Vec<u32> = (0..10_000).collect();
        let mut firsts = Vec::new();
        let outcome = in_order(
            items,
            |job: Vec<u32>| job,
            Vec::len,
            1,
            |run| {
                firsts.push(run[0][0]);
                if run[0][0] >= 1_000 {
                    Err("stop")
                } else {
                    Ok(())
                }
            },
        );
        assert_eq!(outcome, Err("stop"));
        let (last, before) = firsts.split_last().expect("runs");
        assert!(*last >= 1_000 && before.iter().all(|first| *first < 1_000));
        assert_eq!(before.first(), Some(&0));
    }

    /// No items: `consume` is never called.
    #[test]
    fn in_order_of_nothing_consumes_nothing() {
        let outcome: Result<(), ()> = in_order(
            Vec::<u8>::new(),
            |job| job,
            Vec::len,
            1,
            |_| panic!("called"),
        );
        assert_eq!(outcome, Ok(()));
    }
}
