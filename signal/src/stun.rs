//! STUN (RFC 5389) Binding, the part WebRTC needs to learn a server-reflexive
//! address: a sans-IO client ([`binding_request`], [`binding_response`]) and the
//! server's responder. The parsers are strict and never panic.
//!
//! ```text
//! Header: { type u16 BE | length u16 BE | magic cookie 0x2112A442 | transaction id [12] }
//! Attribute: { type u16 BE | length u16 BE | value, padded to 4 bytes }
//! ```

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// A STUN transaction id.
pub type TransactionId = [u8; 12];

/// The fixed STUN magic cookie.
pub const MAGIC_COOKIE: u32 = 0x2112_A442;
/// Length of the STUN header.
pub const HEADER_BYTES: usize = 20;
/// The largest STUN message the responder reads (one unfragmented datagram on most paths).
pub const MESSAGE_BYTES_MAX: usize = 1280;

const BINDING_REQUEST: u16 = 0x0001;
const BINDING_SUCCESS: u16 = 0x0101;
const ATTRIBUTE_MAPPED_ADDRESS: u16 = 0x0001;
const ATTRIBUTE_XOR_MAPPED_ADDRESS: u16 = 0x0020;
const FAMILY_IPV4: u8 = 0x01;
const FAMILY_IPV6: u8 = 0x02;

/// A parsed STUN message: its type, transaction id and attributes area.
struct Message<'a> {
    kind: u16,
    transaction: TransactionId,
    attributes: &'a [u8],
}

/// Parses the header and checks that the attributes are well-formed TLVs that
/// exactly fill the declared length.
fn parse(bytes: &[u8]) -> Option<Message<'_>> {
    if bytes.len() < HEADER_BYTES || bytes.len() > MESSAGE_BYTES_MAX {
        return None;
    }
    let kind = u16::from_be_bytes([bytes[0], bytes[1]]);
    // The two top bits of a STUN message are zero (RFC 5389 §6).
    if kind & 0xC000 != 0 {
        return None;
    }
    let length = usize::from(u16::from_be_bytes([bytes[2], bytes[3]]));
    if length % 4 != 0 || HEADER_BYTES + length != bytes.len() {
        return None;
    }
    if u32::from_be_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]) != MAGIC_COOKIE {
        return None;
    }
    let mut transaction = [0u8; 12];
    transaction.copy_from_slice(&bytes[8..HEADER_BYTES]);
    let attributes = &bytes[HEADER_BYTES..];
    let mut rest = attributes;
    while !rest.is_empty() {
        let (_, _, tail) = next_attribute(rest)?;
        rest = tail;
    }
    Some(Message {
        kind,
        transaction,
        attributes,
    })
}

/// Splits the first attribute off: (type, value, rest after padding).
fn next_attribute(bytes: &[u8]) -> Option<(u16, &[u8], &[u8])> {
    let header = bytes.get(..4)?;
    let kind = u16::from_be_bytes([header[0], header[1]]);
    let length = usize::from(u16::from_be_bytes([header[2], header[3]]));
    let padded = length.checked_add(3)? / 4 * 4;
    let body = bytes.get(4..4 + padded)?;
    Some((kind, &body[..length], &bytes[4 + padded..]))
}

fn attributes(mut bytes: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    std::iter::from_fn(move || {
        let (kind, value, rest) = next_attribute(bytes)?;
        bytes = rest;
        Some((kind, value))
    })
}

/// A fresh Binding request with no attributes (20 bytes) and its transaction id.
pub fn binding_request() -> (TransactionId, Vec<u8>) {
    let mut transaction = [0u8; 12];
    getrandom::fill(&mut transaction).expect("the operating system's random source is available");
    let mut bytes = Vec::with_capacity(HEADER_BYTES);
    bytes.extend_from_slice(&BINDING_REQUEST.to_be_bytes());
    bytes.extend_from_slice(&0u16.to_be_bytes());
    bytes.extend_from_slice(&MAGIC_COOKIE.to_be_bytes());
    bytes.extend_from_slice(&transaction);
    (transaction, bytes)
}

/// The mapped address in a Binding success response to the request `expected`:
/// XOR-MAPPED-ADDRESS, or MAPPED-ADDRESS from an old server. `None` for anything
/// else (another transaction, an error response, malformed bytes).
pub fn binding_response(bytes: &[u8], expected: &TransactionId) -> Option<SocketAddr> {
    let message = parse(bytes)?;
    if message.kind != BINDING_SUCCESS || &message.transaction != expected {
        return None;
    }
    let mut mapped = None;
    for (kind, value) in attributes(message.attributes) {
        match kind {
            ATTRIBUTE_XOR_MAPPED_ADDRESS => {
                return decode_address(value, Some(&message.transaction));
            }
            ATTRIBUTE_MAPPED_ADDRESS if mapped.is_none() => mapped = decode_address(value, None),
            _ => {}
        }
    }
    mapped
}

/// Decodes an address attribute value, un-XORing it when `transaction` is given.
fn decode_address(value: &[u8], transaction: Option<&TransactionId>) -> Option<SocketAddr> {
    let mask = xor_mask(transaction);
    let (&[_, family, port_high, port_low], address) = value.split_first_chunk::<4>()?;
    let mut port = u16::from_be_bytes([port_high, port_low]);
    if transaction.is_some() {
        port ^= (MAGIC_COOKIE >> 16) as u16;
    }
    let ip = match (family, address.len()) {
        (FAMILY_IPV4, 4) => {
            let mut octets = [0u8; 4];
            for (index, byte) in octets.iter_mut().enumerate() {
                *byte = address[index] ^ mask[index];
            }
            IpAddr::V4(Ipv4Addr::from(octets))
        }
        (FAMILY_IPV6, 16) => {
            let mut octets = [0u8; 16];
            for (index, byte) in octets.iter_mut().enumerate() {
                *byte = address[index] ^ mask[index];
            }
            IpAddr::V6(Ipv6Addr::from(octets))
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

/// magic cookie || transaction id, or zeros for an un-XORed address.
fn xor_mask(transaction: Option<&TransactionId>) -> [u8; 16] {
    let mut mask = [0u8; 16];
    if let Some(transaction) = transaction {
        mask[..4].copy_from_slice(&MAGIC_COOKIE.to_be_bytes());
        mask[4..].copy_from_slice(transaction);
    }
    mask
}

/// The responder's answer (sans-IO) to a datagram from `source`: a Binding success response
/// with one XOR-MAPPED-ADDRESS (32 bytes for IPv4, 44 for IPv6, against a request
/// of at least 20) if the datagram is a well-formed Binding request; `None` for
/// anything else, which is ignored.
pub fn answer(request: &[u8], source: SocketAddr) -> Option<Vec<u8>> {
    let message = parse(request)?;
    if message.kind != BINDING_REQUEST {
        return None;
    }
    let ip = match source.ip() {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    };
    let mask = xor_mask(Some(&message.transaction));
    let mut value = Vec::with_capacity(20);
    value.push(0);
    match ip {
        IpAddr::V4(v4) => {
            value.push(FAMILY_IPV4);
            value.extend_from_slice(&(source.port() ^ (MAGIC_COOKIE >> 16) as u16).to_be_bytes());
            value.extend(v4.octets().iter().zip(mask).map(|(byte, key)| byte ^ key));
        }
        IpAddr::V6(v6) => {
            value.push(FAMILY_IPV6);
            value.extend_from_slice(&(source.port() ^ (MAGIC_COOKIE >> 16) as u16).to_be_bytes());
            value.extend(v6.octets().iter().zip(mask).map(|(byte, key)| byte ^ key));
        }
    }
    let attribute_bytes =
        u16::try_from(value.len()).expect("an address attribute is at most 20 bytes");
    let mut response = Vec::with_capacity(HEADER_BYTES + 4 + value.len());
    response.extend_from_slice(&BINDING_SUCCESS.to_be_bytes());
    response.extend_from_slice(&(attribute_bytes + 4).to_be_bytes());
    response.extend_from_slice(&MAGIC_COOKIE.to_be_bytes());
    response.extend_from_slice(&message.transaction);
    response.extend_from_slice(&ATTRIBUTE_XOR_MAPPED_ADDRESS.to_be_bytes());
    response.extend_from_slice(&attribute_bytes.to_be_bytes());
    response.extend_from_slice(&value);
    Some(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 5769 §2.2: a Binding success response with XOR-MAPPED-ADDRESS
    /// 192.0.2.1:32853 (plus SOFTWARE, MESSAGE-INTEGRITY, FINGERPRINT, skipped).
    #[test]
    fn rfc5769_ipv4_response() {
        let bytes = hex::decode(concat!(
            "0101003c2112a442b7e7a701bc34d686fa87dfae",
            "8022000b7465737420766563746f7220",
            "002000080001a147e112a643",
            "000800142b91f599fd9e90c38c7489f92af9ba53f06be7d7",
            "80280004c07d4c96",
        ))
        .expect("hex");
        let transaction: TransactionId = hex::decode("b7e7a701bc34d686fa87dfae")
            .expect("hex")
            .try_into()
            .expect("12");
        assert_eq!(
            binding_response(&bytes, &transaction),
            Some("192.0.2.1:32853".parse().expect("addr"))
        );
        let mut other = transaction;
        other[0] ^= 1;
        assert_eq!(binding_response(&bytes, &other), None);
    }

    /// RFC 5769 §2.3: the IPv6 response, 2001:db8:1234:5678:11:2233:4455:6677 port 32853.
    #[test]
    fn rfc5769_ipv6_response() {
        let bytes = hex::decode(concat!(
            "010100482112a442b7e7a701bc34d686fa87dfae",
            "8022000b7465737420766563746f7220",
            "002000140002a1470113a9faa5d3f179bc25f4b5bed2b9d9",
            "000800143d7c7ba7dbeb2b3fcaf6aec1f1f5f14ae8a4c6c4",
            "80280004c8fb0b4c",
        ))
        .expect("hex");
        let transaction: TransactionId = hex::decode("b7e7a701bc34d686fa87dfae")
            .expect("hex")
            .try_into()
            .expect("12");
        assert_eq!(
            binding_response(&bytes, &transaction),
            Some(
                "[2001:db8:1234:5678:11:2233:4455:6677]:32853"
                    .parse()
                    .expect("addr")
            )
        );
    }

    /// The responder answers a request with the source address, which the client reads back.
    #[test]
    fn request_answer_round_trip() {
        for source in [
            "203.0.113.7:4242",
            "[2001:db8::1]:9",
            "[::ffff:198.51.100.2]:1000",
        ] {
            let source: SocketAddr = source.parse().expect("addr");
            let (transaction, request) = binding_request();
            assert_eq!(request.len(), HEADER_BYTES);
            let response = answer(&request, source).expect("an answer");
            assert!(
                response.len() <= 2 * request.len() + 4,
                "no amplification: {}",
                response.len()
            );
            let expected = match source.ip() {
                IpAddr::V6(v6) => v6
                    .to_ipv4_mapped()
                    .map_or(source, |v4| SocketAddr::new(v4.into(), source.port())),
                _ => source,
            };
            assert_eq!(binding_response(&response, &transaction), Some(expected));
        }
    }

    /// Byte-exact response for 192.0.2.1:32853 and the RFC 5769 transaction id.
    #[test]
    fn answer_vector() {
        let mut request = hex::decode("000100002112a442b7e7a701bc34d686fa87dfae").expect("hex");
        let response =
            answer(&request, "192.0.2.1:32853".parse().expect("addr")).expect("an answer");
        assert_eq!(
            hex::encode(&response),
            "0101000c2112a442b7e7a701bc34d686fa87dfae002000080001a147e112a643"
        );
        // Anything else is ignored: a response, a bad cookie, a bad length, trailing bytes, a short one.
        assert_eq!(
            answer(&response, "192.0.2.1:1".parse().expect("addr")),
            None
        );
        request[4] ^= 1;
        assert_eq!(answer(&request, "192.0.2.1:1".parse().expect("addr")), None);
        request[4] ^= 1;
        let mut long = request.clone();
        long.extend_from_slice(&[0; 4]);
        assert_eq!(answer(&long, "192.0.2.1:1".parse().expect("addr")), None);
        long[3] = 4;
        long[20..24].copy_from_slice(&[0x80, 0x22, 0x00, 0x04]); // SOFTWARE declaring 4 bytes, none follow
        assert_eq!(answer(&long, "192.0.2.1:1".parse().expect("addr")), None);
        long[20..24].copy_from_slice(&[0x80, 0x22, 0x00, 0x00]); // SOFTWARE, empty: well-formed
        assert!(answer(&long, "192.0.2.1:1".parse().expect("addr")).is_some());
        for cut in 0..request.len() {
            assert_eq!(
                answer(&request[..cut], "192.0.2.1:1".parse().expect("addr")),
                None
            );
        }
    }

    /// Every prefix and every flipped byte of a response parses or is refused, never panics.
    #[test]
    fn parser_never_panics() {
        let (transaction, request) = binding_request();
        let response = answer(&request, "[2001:db8::1]:9".parse().expect("addr")).expect("answer");
        for cut in 0..=response.len() {
            let _ = binding_response(&response[..cut], &transaction);
        }
        for index in 0..response.len() {
            for bit in 0..8 {
                let mut bad = response.clone();
                bad[index] ^= 1 << bit;
                let _ = binding_response(&bad, &transaction);
                let _ = answer(&bad, "192.0.2.1:1".parse().expect("addr"));
            }
        }
    }
}
