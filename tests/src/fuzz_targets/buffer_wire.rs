//! The `buffer_wire` target: one frame body on the buffer's wire, read as
//! what a client sends the server (a request), as what the server answers
//! a client, and as an envelope a member opens (docs/SERVICES.md "Blind
//! sync buffer").

use peers_buffer::{
    Answer, BufferKey, ENVELOPE_BYTES_MAX, GET_ENVELOPES_MAX, PUT_ENVELOPES_MAX, Request,
    check_envelope,
};
use peers_engine::DatabaseId;

/// The database and epoch of SERVICES.md's buffer vectors: seeds sealed
/// for that space open.
const DATABASE: [u8; 32] = [0x11; 32];
const EPOCH: u64 = 2900;

/// `Request::decode`, `Answer::decode` and `Space::open` never panic; a
/// request or answer that decodes is within its counts and encodes back to
/// the same bytes (the layouts have one form; an answer's message only when
/// it is UTF-8); an envelope that opens passes the server's checks and
/// seals back to itself (its nonce is a MAC of its plaintext), so only a
/// member can make one.
pub fn buffer_wire(data: &[u8]) {
    if let Ok(request) = Request::decode(data) {
        match &request {
            Request::Put { envelopes, .. } => {
                assert!(!envelopes.is_empty() && envelopes.len() <= PUT_ENVELOPES_MAX);
                assert!(envelopes.iter().all(|e| e.len() <= ENVELOPE_BYTES_MAX));
            }
            Request::Get { max, .. } => assert!(*max >= 1 && *max as usize <= GET_ENVELOPES_MAX),
        }
        assert_eq!(request.encode(), data);
    }
    if let Ok(answer) = Answer::decode(data) {
        if let Answer::Envelopes { envelopes, .. } = &answer {
            assert!(envelopes.len() <= GET_ENVELOPES_MAX);
        }
        let utf8 = match &answer {
            Answer::Refused { message, .. } => !message.contains('\u{fffd}'),
            _ => true,
        };
        if utf8 {
            assert_eq!(answer.encode(), data);
        }
    }
    let space = BufferKey::of(&DatabaseId(DATABASE)).space(EPOCH);
    if let Ok(change) = space.open(data) {
        assert!(check_envelope(data).is_ok());
        assert_eq!(space.seal(&change).as_deref(), Some(data));
    }
}

#[cfg(test)]
mod tests {
    /// The committed seeds reach the accepting paths: a put and a get
    /// decode as requests, an answer as an answer, an envelope opens.
    #[test]
    fn committed_seeds_decode_as_named() {
        use peers_buffer::{Answer, BufferKey, Request};
        let seeds =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/seeds/buffer_wire");
        let read = |name: &str| std::fs::read(seeds.join(name)).expect("seed");
        assert!(Request::decode(&read("put")).is_ok());
        assert!(Request::decode(&read("get")).is_ok());
        assert!(Answer::decode(&read("answer")).is_ok());
        assert!(Answer::decode(&read("refused")).is_ok());
        let space = BufferKey::of(&peers_engine::DatabaseId(super::DATABASE)).space(super::EPOCH);
        assert!(space.open(&read("envelope")).is_ok());
        for name in ["put", "get", "answer", "refused", "envelope"] {
            super::buffer_wire(&read(name));
        }
    }
}
