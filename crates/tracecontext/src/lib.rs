//! W3C Trace Context (`traceparent`): which trace a request belongs to, so
//! the gateway's log, its audit record and the company's log of the same
//! call can be found by one id.

use http::{HeaderMap, HeaderName, HeaderValue};

pub const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
/// Sent on every answer: the trace id of the request, to quote when asking
/// what happened to it.
pub const X_TRACE_ID: HeaderName = HeaderName::from_static("x-trace-id");

const HEX: &[u8; 16] = b"0123456789abcdef";

/// The trace id of one request: the caller's, when it sent a well-formed
/// `traceparent`, or a new one. The ids need to be unique, not secret:
/// they come from fastrand's thread-local generator (seeded from the OS),
/// not the CSPRNG, which cost about 1 % of the gateway's CPU under load
/// (bench/README.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceId(u128);

impl TraceId {
    pub fn of(headers: &HeaderMap) -> Self {
        headers
            .get(TRACEPARENT)
            .and_then(|v| parse_trace_id(v.as_bytes()))
            .unwrap_or_else(Self::new)
    }

    /// A new trace. All-zero ids are invalid (W3C Trace Context §3.2.2.3).
    pub fn new() -> Self {
        Self(fastrand::u128(1..))
    }

    /// The 32 lowercase hex digits of the id.
    pub fn header_value(self) -> HeaderValue {
        let mut text = [0u8; 32];
        write_hex(&self.0.to_be_bytes(), &mut text);
        // Hex digits are always a valid header value.
        HeaderValue::from_bytes(&text).unwrap_or(HeaderValue::from_static("0"))
    }

    /// A `traceparent` for one call made within this trace: the same trace
    /// id, a new span id, sampled. Written in place: this runs per call.
    pub fn traceparent(self) -> HeaderValue {
        let mut text = *b"00-00000000000000000000000000000000-0000000000000000-01";
        write_hex(&self.0.to_be_bytes(), &mut text[3..35]);
        write_hex(&fastrand::u64(1..).to_be_bytes(), &mut text[36..52]);
        HeaderValue::from_bytes(&text).unwrap_or(HeaderValue::from_static("0"))
    }
}

impl Default for TraceId {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Display for TraceId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

fn write_hex(bytes: &[u8], out: &mut [u8]) {
    for (i, b) in bytes.iter().enumerate() {
        out[2 * i] = HEX[usize::from(b >> 4)];
        out[2 * i + 1] = HEX[usize::from(b & 0x0f)];
    }
}

/// The trace id of a `traceparent` (W3C Trace Context §3.2): version, trace
/// id, parent id and flags in lowercase hex. Version `ff` and all-zero ids
/// are invalid; a later version may append fields after a `-`.
fn parse_trace_id(value: &[u8]) -> Option<TraceId> {
    let hex = |part: &[u8]| -> Option<u128> {
        part.iter().try_fold(0u128, |n, &c| {
            let digit = match c {
                b'0'..=b'9' => c - b'0',
                b'a'..=b'f' => c - b'a' + 10,
                _ => return None,
            };
            Some(n << 4 | u128::from(digit))
        })
    };
    let head = value.get(..55)?;
    let version = &head[..2];
    let well_formed = head[2] == b'-' && head[35] == b'-' && head[52] == b'-';
    let rest_ok = value.len() == 55 || (version != b"00" && value[55] == b'-');
    if !well_formed || !rest_ok || version == b"ff" {
        return None;
    }
    hex(version)?;
    hex(&head[53..55])?;
    let trace = hex(&head[3..35])?;
    let parent = hex(&head[36..52])?;
    (trace != 0 && parent != 0).then_some(TraceId(trace))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_callers_trace_is_continued_and_a_bad_one_replaced() {
        let valid = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let mut headers = HeaderMap::new();
        headers.insert(TRACEPARENT, HeaderValue::from_static(valid));
        let trace = TraceId::of(&headers);
        assert_eq!(trace.to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(trace.header_value(), "4bf92f3577b34da6a3ce929d0e0e4736");
        for bad in [
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ] {
            headers.insert(TRACEPARENT, HeaderValue::from_static(bad));
            assert_ne!(TraceId::of(&headers), trace, "{bad}");
        }
        headers.insert(
            TRACEPARENT,
            HeaderValue::from_static("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-future"),
        );
        assert_eq!(TraceId::of(&headers), trace, "a later version's extra fields");
    }

    #[test]
    fn each_call_gets_its_own_span_in_the_same_trace() {
        let trace = TraceId::new();
        let (a, b) = (trace.traceparent(), trace.traceparent());
        assert_ne!(a, b);
        for value in [a, b] {
            let parts: Vec<&str> = value.to_str().unwrap().split('-').collect();
            assert_eq!(parts.len(), 4, "{value:?}");
            assert_eq!((parts[0], parts[1], parts[3]), ("00", trace.to_string().as_str(), "01"));
            assert_eq!(parts[2].len(), 16);
            assert!(
                parts[2]
                    .bytes()
                    .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c))
            );
            assert!(parts[2].bytes().any(|c| c != b'0'));
            let mut headers = HeaderMap::new();
            headers.insert(TRACEPARENT, value.clone());
            assert_eq!(TraceId::of(&headers), trace, "our own traceparent parses");
        }
        assert_ne!(TraceId::new(), TraceId::new());
    }
}
