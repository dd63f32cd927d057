//! The `ticket_decode` target: an invite ticket, as bytes and as text.

/// A ticket (docs/PROTOCOL.md "Invites"), as bytes and as text, never
/// panics the decoder; bytes that decode encode back to the same bytes (one
/// form), and text that decodes is the ticket its canonical text decodes to.
/// The input is also read with a correct checksum appended, so that the
/// layout behind the checksum is fuzzed too.
pub fn ticket_decode(data: &[u8]) {
    use peers_net::invite::{TICKET_CHECKSUM_BYTES, Ticket};
    let checksum = blake3::hash(data);
    let sealed = [data, &checksum.as_bytes()[..TICKET_CHECKSUM_BYTES]].concat();
    for bytes in [data, &sealed] {
        if let Ok(ticket) = Ticket::from_bytes(bytes) {
            assert_eq!(ticket.to_bytes(), bytes, "{ticket:?} has a second encoding");
        }
    }
    let text = String::from_utf8_lossy(data);
    if let Ok(ticket) = Ticket::decode(&text) {
        assert_eq!(Ticket::decode(&ticket.encode()), Ok(ticket));
    }
}
