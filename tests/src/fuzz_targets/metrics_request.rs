//! The `metrics_request` target: a request head sent to the health and
//! metrics endpoint of `peers serve --metrics`.

/// What a stranger sends the metrics endpoint (docs/SERVICES.md
/// "Always-on peer"): `parse_request` never panics; what it accepts has a
/// request line of GET or HEAD, a path of /metrics or /health, and
/// HTTP/1.x; a refusal maps to a 4xx status.
pub fn metrics_request(data: &[u8]) {
    use peers::metrics::{Request, parse_request};
    match parse_request(data) {
        Ok(request) => {
            let line = data
                .split(|byte| *byte == b'\r' || *byte == b'\n')
                .next()
                .unwrap_or_default();
            let line = std::str::from_utf8(line).expect("an accepted line is UTF-8");
            let head_only = line.starts_with("HEAD ");
            assert!(head_only || line.starts_with("GET "), "{line:?}");
            assert!(line.contains(" HTTP/1."), "{line:?}");
            match request {
                Request::Metrics { head_only: head } => {
                    assert!(line.contains(" /metrics"), "{line:?}");
                    assert_eq!(head, head_only);
                }
                Request::Health { head_only: head } => {
                    assert!(line.contains(" /health"), "{line:?}");
                    assert_eq!(head, head_only);
                }
            }
        }
        Err(refusal) => assert!((400..500).contains(&refusal.status())),
    }
}
