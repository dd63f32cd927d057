//! The `control_request` target: what a client sends the holder of a
//! database through its control socket, also read as an answer.

/// What a client sends the holder of a database through its control socket
/// (docs/PROTOCOL.md "Control socket"), and what a client reads back: the
/// frame reader, the request decoder and the answer reader never panic;
/// a frame that reads is within its limit; a request that decodes encodes
/// to a payload that decodes to the same request; every output frame of an
/// answer is within its limit.
pub fn control_request(data: &[u8]) {
    use peers::control::wire::{
        OUTPUT_BYTES_MAX, REQUEST_BYTES_MAX, Request, read_answer, read_frame,
    };
    if let Ok((_, payload)) = read_frame(data, REQUEST_BYTES_MAX) {
        assert!(payload.len() <= REQUEST_BYTES_MAX);
        if let Ok(request) = Request::decode(&payload) {
            assert_eq!(Request::decode(&request.encode()), Ok(request));
        }
    }
    if let Ok(request) = Request::decode(data) {
        assert_eq!(Request::decode(&request.encode()), Ok(request));
    }
    let _ = read_answer(data, |_, bytes| assert!(bytes.len() <= OUTPUT_BYTES_MAX));
}
