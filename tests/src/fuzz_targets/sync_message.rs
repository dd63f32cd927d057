//! The `sync_message` target: one sync message's bytes, decoded as a peer's.

use peers_engine::{Author, ChangeHash};
use peers_net::{BATCH_CHANGES_MAX, Message};

/// `Message::decode` on arbitrary bytes: never panics and refuses with
/// `MalformedMessage` (naming the input's length); a decoded message holds
/// its limits, refuses a trailing byte, and encodes to bytes that decode to
/// it again. Not canonical: bincode's varints accept non-minimal forms
/// (`[3, 251, 5, 0]` is `CaughtUp { changes: 5 }`, as is `[3, 5]`), so the
/// check is that the encoder writes the shortest form: never longer than
/// the input, and as long only when it is the input itself.
pub fn sync_message(data: &[u8]) {
    let message = match Message::decode(data) {
        Ok(message) => message,
        Err(peers_net::Error::MalformedMessage { bytes, .. }) => {
            assert_eq!(bytes, data.len() as u64, "the refusal names the length");
            return;
        }
        Err(other) => panic!("bad bytes are a MalformedMessage, got {other:?}"),
    };
    match &message {
        Message::Reconcile(ranges) => {
            assert!(ranges.len() <= peers_net::RECONCILE_RANGES_MAX);
            reconcile_answer(ranges);
        }
        Message::Changes(changes) => assert!(changes.len() <= BATCH_CHANGES_MAX),
        Message::Snapshot { bytes, .. } => assert!(*bytes > 0),
        Message::SnapshotPart(part) => {
            assert!(!part.is_empty() && part.len() <= peers_net::SNAPSHOT_PART_BYTES_MAX);
        }
        _ => {}
    }
    let encoded = message
        .encode()
        .expect("a message that decoded is within the limit");
    assert_eq!(
        Message::decode(&encoded).expect("a message's own bytes decode"),
        message,
        "decode(encode(m)) == m"
    );
    assert!(
        encoded.len() <= data.len(),
        "the encoding is the shortest form"
    );
    if encoded.len() == data.len() {
        assert_eq!(encoded, data, "only one form has the shortest length");
    }
    let mut trailing = data.to_vec();
    trailing.push(0);
    assert!(
        Message::decode(&trailing).is_err(),
        "a trailing byte is refused"
    );
}

/// A side holding a fixed set of 200 heads answers a `Reconcile` a peer
/// sent: it may refuse (a typed error), but never panics, and an answer is
/// a well-formed message within the limits.
fn reconcile_answer(ranges: &[peers_net::Range]) {
    let mut heads: Vec<(Author, peers_engine::Head)> = (0..200u64)
        .map(|index| {
            let mut key = [0u8; 32];
            key[..8].copy_from_slice(&(index * 0x0147_ae14_7ae1_47ae).to_be_bytes());
            (
                Author(key),
                peers_engine::Head {
                    seq: index + 1,
                    hash: ChangeHash([index as u8; 32]),
                },
            )
        })
        .collect();
    heads.sort_by_key(|(author, _)| *author);
    let mut side = peers_net::Reconciler::new(heads);
    let Ok(answer) = side.respond(ranges) else {
        return;
    };
    assert!(answer.len() <= peers_net::RECONCILE_RANGES_MAX);
    let bytes = Message::Reconcile(answer)
        .encode()
        .expect("an answer fits in a message");
    Message::decode(&bytes).expect("an answer is well-formed");
}
