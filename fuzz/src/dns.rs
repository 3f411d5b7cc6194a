//! The sidecar's DNS proxy on one message from the workload, over UDP and TCP: a query it
//! answers from its name table, a refusal, or nothing. Whatever comes back is a response to
//! the same ID with one question (or none, for a refusal), never a query; over UDP it fits
//! what the asker said it takes (512 bytes, or its EDNS size).

use weft_proxy::fuzzing::dns_reply;

pub fn dns(data: &[u8]) {
    for tcp in [false, true] {
        let Some(reply) = dns_reply(data, tcp) else { continue };
        assert!(reply.len() >= 12, "a reply has a header");
        assert_eq!(reply[0..2], data[0..2], "the reply carries the query's ID");
        assert_ne!(reply[2] & 0x80, 0, "a reply is a response");
        let questions = u16::from_be_bytes([reply[4], reply[5]]);
        assert!(questions <= 1, "at most the one question");
        assert!(dns_reply(&reply, tcp).is_none(), "a reply is never answered");
        if !tcp {
            let edns = edns_size(data).unwrap_or(512).max(512);
            assert!(reply.len() <= edns, "{} bytes over UDP to an asker taking {edns}", reply.len());
        }
    }
}

/// The EDNS UDP size an OPT record in the query's additional section gives, if there is one
/// right after a single question (the only shape the proxy answers from its table).
fn edns_size(data: &[u8]) -> Option<usize> {
    let mut at = 12;
    while *data.get(at)? != 0 {
        at += usize::from(*data.get(at)?) + 1;
    }
    at += 5;
    let rr = data.get(at..at + 11)?;
    (rr[0] == 0 && rr[1..3] == [0, 41]).then(|| usize::from(u16::from_be_bytes([rr[3], rr[4]])))
}
