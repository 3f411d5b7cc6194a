//! The DNS wire format (RFC 1035), as much of it as a stub resolver's queries need: the header,
//! one question, the EDNS(0) payload size (RFC 6891), and answers of A, AAAA and CNAME records.
//! What a query carries beyond that is not read. A query that does not parse is answered
//! FORMERR when its header can be read, and dropped when not even that.

use std::net::{Ipv4Addr, Ipv6Addr};

pub const TYPE_A: u16 = 1;
pub const TYPE_CNAME: u16 = 5;
pub const TYPE_AAAA: u16 = 28;
const TYPE_OPT: u16 = 41;
const CLASS_IN: u16 = 1;

pub const RCODE_FORMERR: u8 = 1;
pub const RCODE_SERVFAIL: u8 = 2;
pub const RCODE_NOTIMP: u8 = 4;

const HEADER: usize = 12;
/// What a UDP answer may be without EDNS (RFC 1035 4.2.1).
pub const UDP_PLAIN: usize = 512;
/// The OPT record of an answer to an EDNS query: root owner, type 41, our UDP payload size
/// (1232, the size DNS flag day 2020 settled on), no extended flags, no options.
const OPT_RECORD: [u8; 11] = [0, 0, 41, 0x04, 0xD0, 0, 0, 0, 0, 0, 0];

/// A name's longest wire form (RFC 1035 2.3.4).
const MAX_NAME: usize = 255;
/// Seconds a local answer may be cached: short, so a changed address is seen soon (Istio's).
const TTL: u32 = 30;

/// A query, as far as it was read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query {
    pub id: u16,
    /// Recursion desired, echoed in the answer.
    pub rd: bool,
    /// The name asked, lower case, with its final dot (`reviews.default.svc.cluster.local.`).
    pub name: String,
    pub qtype: u16,
    pub qclass: u16,
    /// The question section as it came (the asker's letter case, which answers must echo).
    question: Vec<u8>,
    /// The largest UDP answer the asker takes (512 without EDNS).
    pub udp_size: usize,
    /// The query carried an OPT record: the answer carries one too (RFC 6891 7).
    edns: bool,
}

/// Why a message is not a query weft answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// Not even a header: nothing to answer.
    Drop,
    /// Answered with this response code (FORMERR, NOTIMP).
    Answer { id: u16, rd: bool, rcode: u8 },
}

impl Query {
    pub fn parse(msg: &[u8]) -> Result<Query, Refusal> {
        if msg.len() < HEADER {
            return Err(Refusal::Drop);
        }
        let id = u16::from_be_bytes([msg[0], msg[1]]);
        let flags = u16::from_be_bytes([msg[2], msg[3]]);
        let rd = flags & 0x0100 != 0;
        // A response sent to the server is not answered (no reflection loops).
        if flags & 0x8000 != 0 {
            return Err(Refusal::Drop);
        }
        let refuse = |rcode| Err(Refusal::Answer { id, rd, rcode });
        if (flags >> 11) & 0xF != 0 {
            return refuse(RCODE_NOTIMP);
        }
        let count = |i: usize| u16::from_be_bytes([msg[i], msg[i + 1]]);
        let (qd, an, ns, ar) = (count(4), count(6), count(8), count(10));
        if qd != 1 || an != 0 {
            return refuse(RCODE_FORMERR);
        }
        let Some((name, end)) = read_name(msg, HEADER) else { return refuse(RCODE_FORMERR) };
        let Some(fixed) = msg.get(end..end + 4) else { return refuse(RCODE_FORMERR) };
        let qtype = u16::from_be_bytes([fixed[0], fixed[1]]);
        let qclass = u16::from_be_bytes([fixed[2], fixed[3]]);
        let question = msg[HEADER..end + 4].to_vec();
        // The additional section may carry an OPT record with the asker's UDP payload size.
        let mut at = end + 4;
        let mut udp_size = UDP_PLAIN;
        let mut edns = false;
        for _ in 0..u32::from(ns) + u32::from(ar) {
            let Some((kind, class, next)) = skip_record(msg, at) else { return refuse(RCODE_FORMERR) };
            if kind == TYPE_OPT {
                udp_size = usize::from(class).max(UDP_PLAIN);
                edns = true;
            }
            at = next;
        }
        Ok(Query { id, rd, name, qtype, qclass, question, udp_size, edns })
    }

    /// The answer with `rcode` and `answers` (authoritative: weft knows these names), cut to
    /// `limit` bytes by dropping whole records and setting TC when they do not fit.
    pub fn answer(&self, rcode: u8, answers: &[Record], limit: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER + self.question.len() + answers.len() * 16);
        let mut written = 0u16;
        let header_at = out.len();
        out.extend_from_slice(&[0; HEADER]);
        out.extend_from_slice(&self.question);
        let mut truncated = false;
        // Room kept for the OPT record an EDNS asker gets back.
        let room = if self.edns { limit.saturating_sub(OPT_RECORD.len()) } else { limit };
        for r in answers {
            let mark = out.len();
            r.write(&mut out);
            if out.len() > room {
                out.truncate(mark);
                truncated = true;
                break;
            }
            written += 1;
        }
        if self.edns {
            out.extend_from_slice(&OPT_RECORD);
        }
        // QR, AA, RD as asked, RA (the sidecar forwards what it does not know).
        let mut flags: u16 = 0x8000 | 0x0400 | 0x0080 | u16::from(rcode & 0xF);
        if self.rd {
            flags |= 0x0100;
        }
        if truncated {
            flags |= 0x0200;
        }
        let h = &mut out[header_at..header_at + HEADER];
        h[0..2].copy_from_slice(&self.id.to_be_bytes());
        h[2..4].copy_from_slice(&flags.to_be_bytes());
        h[4..6].copy_from_slice(&1u16.to_be_bytes());
        h[6..8].copy_from_slice(&written.to_be_bytes());
        h[10..12].copy_from_slice(&u16::from(self.edns).to_be_bytes());
        out
    }

    /// Whether `reply` (from an upstream resolver) answers this query: same ID, a response,
    /// the same question.
    pub fn answered_by(&self, reply: &[u8]) -> bool {
        reply.len() >= HEADER + self.question.len()
            && reply[0..2] == self.id.to_be_bytes()
            && reply[2] & 0x80 != 0
            && reply[4..6] == 1u16.to_be_bytes()
            && reply[HEADER..HEADER + self.question.len()].eq_ignore_ascii_case(&self.question)
    }

    pub fn is_internet(&self) -> bool {
        self.qclass == CLASS_IN
    }
}

/// A header-only answer to a message that was refused.
pub fn refusal(id: u16, rd: bool, rcode: u8) -> Vec<u8> {
    let mut flags: u16 = 0x8000 | 0x0080 | u16::from(rcode & 0xF);
    if rd {
        flags |= 0x0100;
    }
    let mut out = vec![0; HEADER];
    out[0..2].copy_from_slice(&id.to_be_bytes());
    out[2..4].copy_from_slice(&flags.to_be_bytes());
    out
}

/// One answer record. The first record's owner is the question's name; a CNAME's target owns
/// the records after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    /// The question's name is an alias of `target` (with its final dot).
    Cname {
        target: String,
    },
    V4 {
        owner: Owner,
        ip: Ipv4Addr,
    },
    V6 {
        owner: Owner,
        ip: Ipv6Addr,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Owner {
    /// The name in the question (written as a pointer to it, so its letter case is the asker's).
    Question,
    Name(String),
}

impl Record {
    fn write(&self, out: &mut Vec<u8>) {
        let (owner, kind, rdata): (&Owner, u16, Vec<u8>) = match self {
            Record::Cname { target } => (&Owner::Question, TYPE_CNAME, encode_name(target)),
            Record::V4 { owner, ip } => (owner, TYPE_A, ip.octets().to_vec()),
            Record::V6 { owner, ip } => (owner, TYPE_AAAA, ip.octets().to_vec()),
        };
        match owner {
            Owner::Question => out.extend_from_slice(&[0xC0, HEADER as u8]),
            Owner::Name(n) => out.extend_from_slice(&encode_name(n)),
        }
        out.extend_from_slice(&kind.to_be_bytes());
        out.extend_from_slice(&CLASS_IN.to_be_bytes());
        out.extend_from_slice(&TTL.to_be_bytes());
        // Names are at most 255 bytes and addresses 16: always fits.
        out.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
        out.extend_from_slice(&rdata);
    }
}

/// `name` (dotted, final dot optional) in wire form. Names come from the name table, whose
/// hosts validation checked; a label too long for the wire is cut rather than overflowing.
fn encode_name(name: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(name.len() + 2);
    for label in name.trim_end_matches('.').split('.').filter(|l| !l.is_empty()) {
        let l = &label.as_bytes()[..label.len().min(63)];
        out.push(l.len() as u8);
        out.extend_from_slice(l);
    }
    out.push(0);
    out
}

/// Reads an uncompressed name at `at` (a question's name is never compressed: it is the first
/// name in the message). Returns it lower case with a final dot, and where it ends.
fn read_name(msg: &[u8], mut at: usize) -> Option<(String, usize)> {
    let mut name = String::new();
    let mut wire = 0usize;
    loop {
        let len = usize::from(*msg.get(at)?);
        at += 1;
        wire += len + 1;
        if wire > MAX_NAME {
            return None;
        }
        if len == 0 {
            break;
        }
        // 0xC0: a pointer; 0x40 and 0x80: label types that were never used.
        if len > 63 {
            return None;
        }
        let label = msg.get(at..at + len)?;
        // What a hostname may hold (and `_`, `*`) as itself; any other byte as `\DDD`, the
        // presentation form: such a name matches nothing in the table and goes upstream
        // unchanged, and cannot be mistaken for another when matched or logged.
        for b in label {
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'*') {
                name.push(char::from(b.to_ascii_lowercase()));
            } else {
                name.push_str(&format!("\\{b:03}"));
            }
        }
        name.push('.');
        at += len;
    }
    if name.is_empty() {
        name.push('.');
    }
    Some((name, at))
}

/// Skips one resource record at `at` (its owner may be compressed); returns its type, class and
/// where the next starts.
fn skip_record(msg: &[u8], mut at: usize) -> Option<(u16, u16, usize)> {
    loop {
        let len = *msg.get(at)?;
        if len & 0xC0 == 0xC0 {
            at += 2;
            break;
        }
        if len > 63 {
            return None;
        }
        at += 1 + usize::from(len);
        if len == 0 {
            break;
        }
    }
    let fixed = msg.get(at..at + 10)?;
    let kind = u16::from_be_bytes([fixed[0], fixed[1]]);
    let class = u16::from_be_bytes([fixed[2], fixed[3]]);
    let rdlen = usize::from(u16::from_be_bytes([fixed[8], fixed[9]]));
    let end = at + 10 + rdlen;
    (end <= msg.len()).then_some((kind, class, end))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A query as glibc's stub resolver sends it, with or without an EDNS OPT record.
    pub(crate) fn query(id: u16, name: &str, qtype: u16, edns: Option<u16>) -> Vec<u8> {
        let mut m = Vec::new();
        m.extend_from_slice(&id.to_be_bytes());
        m.extend_from_slice(&0x0100u16.to_be_bytes());
        m.extend_from_slice(&[0, 1, 0, 0, 0, 0, 0, u8::from(edns.is_some())]);
        m.extend_from_slice(&encode_name(name));
        m.extend_from_slice(&qtype.to_be_bytes());
        m.extend_from_slice(&1u16.to_be_bytes());
        if let Some(size) = edns {
            m.extend_from_slice(&[0, 0, 41]);
            m.extend_from_slice(&size.to_be_bytes());
            m.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
        }
        m
    }

    #[test]
    fn a_query_parses_with_its_edns_size_and_lower_cased_name() {
        let q = Query::parse(&query(7, "Reviews.Default.svc.cluster.local", TYPE_A, Some(1232))).expect("parse");
        assert_eq!((q.id, q.rd, q.name.as_str(), q.qtype, q.udp_size), (7, true, "reviews.default.svc.cluster.local.", TYPE_A, 1232));
        assert_eq!(Query::parse(&query(8, "x", TYPE_AAAA, None)).expect("parse").udp_size, UDP_PLAIN);
    }

    #[test]
    fn malformed_queries_are_refused_not_guessed() {
        assert_eq!(Query::parse(&[0; 5]), Err(Refusal::Drop));
        let mut response = query(1, "a.b", TYPE_A, None);
        response[2] |= 0x80;
        assert_eq!(Query::parse(&response), Err(Refusal::Drop), "a response is never answered");
        let mut two = query(2, "a.b", TYPE_A, None);
        two[5] = 2;
        assert_eq!(Query::parse(&two), Err(Refusal::Answer { id: 2, rd: true, rcode: RCODE_FORMERR }));
        let mut cut = query(3, "a.b", TYPE_A, None);
        cut.truncate(cut.len() - 3);
        assert_eq!(Query::parse(&cut), Err(Refusal::Answer { id: 3, rd: true, rcode: RCODE_FORMERR }));
        let mut pointer = query(4, "a.b", TYPE_A, None);
        pointer[12] = 0xC0;
        assert!(matches!(Query::parse(&pointer), Err(Refusal::Answer { rcode: RCODE_FORMERR, .. })));
        let mut odd = query(5, "a.b", TYPE_A, None);
        odd[13] = b' ';
        assert_eq!(Query::parse(&odd).map(|q| q.name), Ok("\\032.b.".to_owned()), "a space in a name is kept, escaped, to go upstream");
        let long = format!("{}.{}.{}.{}.{}", "a".repeat(60), "b".repeat(60), "c".repeat(60), "d".repeat(60), "e".repeat(20));
        assert!(matches!(Query::parse(&query(6, &long, TYPE_A, None)), Err(Refusal::Answer { rcode: RCODE_FORMERR, .. })));
        let mut notify = query(9, "a.b", TYPE_A, None);
        notify[2] |= 4 << 3;
        assert!(matches!(Query::parse(&notify), Err(Refusal::Answer { rcode: RCODE_NOTIMP, .. })));
    }

    #[test]
    fn answers_echo_the_question_and_are_cut_whole_with_tc() {
        let q = Query::parse(&query(9, "Web.NS", TYPE_A, None)).expect("parse");
        let recs: Vec<Record> = (0..40).map(|i| Record::V4 { owner: Owner::Question, ip: Ipv4Addr::new(10, 0, 0, i) }).collect();
        let full = q.answer(0, &recs, usize::MAX);
        assert_eq!(&full[12..12 + 8], &[3, b'W', b'e', b'b', 2, b'N', b'S', 0], "the asker's letter case");
        assert_eq!(u16::from_be_bytes([full[6], full[7]]), 40);
        assert_eq!(full[2] & 0x02, 0, "not truncated");
        let cut = q.answer(0, &recs, UDP_PLAIN);
        assert!(cut.len() <= UDP_PLAIN);
        assert_eq!(cut[2] & 0x02, 0x02, "TC set");
        assert_eq!(usize::from(u16::from_be_bytes([cut[6], cut[7]])), (UDP_PLAIN - 12 - 12) / 16);
        assert!(q.answered_by(&full));
        let edns = Query::parse(&query(10, "web.ns", TYPE_A, Some(4096))).expect("parse");
        let with_opt = edns.answer(0, &recs[..2], 512);
        assert_eq!(u16::from_be_bytes([with_opt[10], with_opt[11]]), 1, "an EDNS asker gets an OPT record back");
        assert_eq!(&with_opt[with_opt.len() - 11..], &OPT_RECORD);
        let other = Query::parse(&query(9, "web.other", TYPE_A, None)).expect("parse");
        assert!(!other.answered_by(&full), "a reply to another question");
    }
}
