//! The `change_decode` target: one change's bytes.

use peers_engine::{Change, verify_signature, verify_signatures};

/// `Change::decode` on arbitrary bytes: never panics; what decodes keeps its
/// exact bytes, decodes again to the same change and hash, and gets the same
/// signature verdict alone, twice, and in a batch.
pub fn change_decode(data: &[u8]) {
    let Ok(change) = Change::decode(data) else {
        return;
    };
    assert_eq!(change.bytes(), data, "a decoded change keeps its bytes");
    let again = Change::decode(change.bytes()).expect("a change's own bytes decode");
    assert_eq!(again, change);
    assert_eq!(again.hash(), change.hash(), "the hash is stable");
    // Debug, not ==: a NaN value is not equal to itself.
    assert_eq!(
        format!("{:?}", again.body()),
        format!("{:?}", change.body())
    );
    assert_eq!(
        change.predecessors().count(),
        usize::from(change.body().prev.is_some()) + change.body().deps.len()
    );
    let verdict = verify_signature(&change);
    assert_eq!(verify_signature(&again), verdict, "the verdict is stable");
    let batch = verify_signatures(&[change, again]);
    match verdict {
        Ok(()) => assert_eq!(batch, Ok(()), "batch and single verdicts agree"),
        Err(fault) => assert_eq!(batch, Err((0, fault)), "batch and single verdicts agree"),
    }
}
