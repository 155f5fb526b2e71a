//! The DNS wire format, as much of it as an authoritative server for one zone needs: reading a
//! query's header and question, and writing a response with A, AAAA, CNAME, PTR, SRV and SOA
//! records (RFC 1035, RFC 2782, RFC 3596). Names are written uncompressed.

use std::net::{Ipv4Addr, Ipv6Addr};

pub const TYPE_A: u16 = 1;
pub const TYPE_CNAME: u16 = 5;
pub const TYPE_SOA: u16 = 6;
pub const TYPE_PTR: u16 = 12;
pub const TYPE_AAAA: u16 = 28;
pub const TYPE_SRV: u16 = 33;
pub const TYPE_ANY: u16 = 255;
const CLASS_IN: u16 = 1;

/// A response code (RFC 1035 §4.1.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rcode {
    NoError = 0,
    FormErr = 1,
    NxDomain = 3,
    NotImp = 4,
    Refused = 5,
}

/// A query: its id and flags, and its one question (the name lowercased, without the final dot).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query {
    pub id: u16,
    pub flags: u16,
    pub name: String,
    pub qtype: u16,
    /// The question section as received, echoed in the response.
    question: Vec<u8>,
}

/// A message that is not a query this server can answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Malformed {
    /// Shorter than a header: nothing to answer.
    NoHeader,
    /// A header (id, flags) but no readable single question: answer with this code.
    Refuse { id: u16, flags: u16, rcode: Rcode },
}

/// A record's data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rdata {
    A(Ipv4Addr),
    Aaaa(Ipv6Addr),
    Cname(String),
    Ptr(String),
    Srv {
        priority: u16,
        weight: u16,
        port: u16,
        target: String,
    },
    Soa {
        mname: String,
        rname: String,
        serial: u32,
        minimum: u32,
    },
}

impl Rdata {
    pub fn rtype(&self) -> u16 {
        match self {
            Rdata::A(_) => TYPE_A,
            Rdata::Aaaa(_) => TYPE_AAAA,
            Rdata::Cname(_) => TYPE_CNAME,
            Rdata::Ptr(_) => TYPE_PTR,
            Rdata::Srv { .. } => TYPE_SRV,
            Rdata::Soa { .. } => TYPE_SOA,
        }
    }
}

/// One resource record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub name: String,
    pub ttl: u32,
    pub data: Rdata,
}

/// What to answer: a code and the three record sections.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub rcode: Rcode,
    pub answers: Vec<Record>,
    pub authority: Vec<Record>,
    pub additional: Vec<Record>,
}

impl Answer {
    pub fn code(rcode: Rcode) -> Answer {
        Answer {
            rcode,
            answers: Vec::new(),
            authority: Vec::new(),
            additional: Vec::new(),
        }
    }
}

const FLAG_QR: u16 = 0x8000;
const FLAG_AA: u16 = 0x0400;
const FLAG_TC: u16 = 0x0200;
const FLAG_RD: u16 = 0x0100;
const OPCODE_MASK: u16 = 0x7800;

/// Reads a query: one question of class IN, standard opcode.
pub fn parse_query(message: &[u8]) -> Result<Query, Malformed> {
    if message.len() < 12 {
        return Err(Malformed::NoHeader);
    }
    let word = |at: usize| u16::from_be_bytes([message[at], message[at + 1]]);
    let (id, flags) = (word(0), word(2));
    let refuse = |rcode| Malformed::Refuse { id, flags, rcode };
    if flags & FLAG_QR != 0 {
        return Err(Malformed::NoHeader);
    }
    if flags & OPCODE_MASK != 0 {
        return Err(refuse(Rcode::NotImp));
    }
    if word(4) != 1 {
        return Err(refuse(Rcode::FormErr));
    }
    let mut at = 12;
    let mut labels = Vec::new();
    loop {
        let len = *message.get(at).ok_or(refuse(Rcode::FormErr))? as usize;
        at += 1;
        if len == 0 {
            break;
        }
        // A pointer or a reserved label type has no place in a question.
        if len > 63 {
            return Err(refuse(Rcode::FormErr));
        }
        let label = message.get(at..at + len).ok_or(refuse(Rcode::FormErr))?;
        labels.push(String::from_utf8_lossy(label).to_ascii_lowercase());
        at += len;
    }
    let fixed = message.get(at..at + 4).ok_or(refuse(Rcode::FormErr))?;
    let qtype = u16::from_be_bytes([fixed[0], fixed[1]]);
    let qclass = u16::from_be_bytes([fixed[2], fixed[3]]);
    if qclass != CLASS_IN {
        return Err(refuse(Rcode::Refused));
    }
    Ok(Query {
        id,
        flags,
        name: labels.join("."),
        qtype,
        question: message[12..at + 4].to_vec(),
    })
}

/// The response to `query`, at most `limit` bytes: when the records do not fit, none are sent
/// and the message says it was truncated (the client asks again over TCP).
pub fn response(query: &Query, answer: &Answer, limit: usize) -> Vec<u8> {
    // Authoritative for what it answers; a name it refuses is not its own.
    let authority = if answer.rcode == Rcode::Refused {
        0
    } else {
        FLAG_AA
    };
    let flags = FLAG_QR | authority | (query.flags & (OPCODE_MASK | FLAG_RD)) | answer.rcode as u16;
    let mut out = header(query.id, flags, 1, answer);
    out.extend_from_slice(&query.question);
    for record in answer
        .answers
        .iter()
        .chain(&answer.authority)
        .chain(&answer.additional)
    {
        write_record(&mut out, record);
    }
    if out.len() > limit {
        let mut truncated = header(query.id, flags | FLAG_TC, 1, &Answer::code(answer.rcode));
        truncated.extend_from_slice(&query.question);
        return truncated;
    }
    out
}

/// The response to a message that could not be read as a query.
pub fn refusal(id: u16, flags: u16, rcode: Rcode) -> Vec<u8> {
    let flags = FLAG_QR | (flags & (OPCODE_MASK | FLAG_RD)) | rcode as u16;
    header(id, flags, 0, &Answer::code(rcode))
}

fn header(id: u16, flags: u16, questions: u16, answer: &Answer) -> Vec<u8> {
    let count = |records: &Vec<Record>| u16::try_from(records.len()).unwrap_or(u16::MAX);
    [
        id,
        flags,
        questions,
        count(&answer.answers),
        count(&answer.authority),
        count(&answer.additional),
    ]
    .iter()
    .flat_map(|w| w.to_be_bytes())
    .collect()
}

fn write_name(out: &mut Vec<u8>, name: &str) {
    for label in name.split('.').filter(|l| !l.is_empty()) {
        let bytes = &label.as_bytes()[..label.len().min(63)];
        out.push(bytes.len() as u8);
        out.extend_from_slice(bytes);
    }
    out.push(0);
}

fn write_record(out: &mut Vec<u8>, record: &Record) {
    write_name(out, &record.name);
    out.extend_from_slice(&record.data.rtype().to_be_bytes());
    out.extend_from_slice(&CLASS_IN.to_be_bytes());
    out.extend_from_slice(&record.ttl.to_be_bytes());
    let mut data = Vec::new();
    match &record.data {
        Rdata::A(ip) => data.extend_from_slice(&ip.octets()),
        Rdata::Aaaa(ip) => data.extend_from_slice(&ip.octets()),
        Rdata::Cname(name) | Rdata::Ptr(name) => write_name(&mut data, name),
        Rdata::Srv {
            priority,
            weight,
            port,
            target,
        } => {
            for word in [priority, weight, port] {
                data.extend_from_slice(&word.to_be_bytes());
            }
            write_name(&mut data, target);
        }
        Rdata::Soa {
            mname,
            rname,
            serial,
            minimum,
        } => {
            write_name(&mut data, mname);
            write_name(&mut data, rname);
            // serial, refresh, retry, expire, minimum
            for word in [*serial, 7200, 1800, 86400, *minimum] {
                data.extend_from_slice(&word.to_be_bytes());
            }
        }
    }
    out.extend_from_slice(&(data.len() as u16).to_be_bytes());
    out.extend_from_slice(&data);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A query as `dig` sends it (without EDNS): id 0x1234, recursion desired.
    fn query_bytes(name: &str, qtype: u16) -> Vec<u8> {
        let mut q = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
        write_name(&mut q, name);
        q.extend_from_slice(&qtype.to_be_bytes());
        q.extend_from_slice(&CLASS_IN.to_be_bytes());
        q
    }

    #[test]
    fn reads_a_query_and_answers_it() {
        let query = parse_query(&query_bytes("Web.Default.svc.cluster.local", TYPE_A)).unwrap();
        assert_eq!(query.name, "web.default.svc.cluster.local");
        assert_eq!((query.id, query.qtype), (0x1234, TYPE_A));
        let answer = Answer {
            rcode: Rcode::NoError,
            answers: vec![Record {
                name: query.name.clone(),
                ttl: 5,
                data: Rdata::A(Ipv4Addr::new(10, 96, 0, 20)),
            }],
            authority: Vec::new(),
            additional: Vec::new(),
        };
        let out = response(&query, &answer, 512);
        // Header: id, QR|AA|RD, 1 question, 1 answer.
        assert_eq!(&out[..8], &[0x12, 0x34, 0x85, 0x00, 0, 1, 0, 1]);
        // The record ends with type A, class IN, TTL 5, length 4 and the address.
        assert_eq!(
            &out[out.len() - 14..],
            &[0, 1, 0, 1, 0, 0, 0, 5, 0, 4, 10, 96, 0, 20]
        );
    }

    #[test]
    fn what_does_not_fit_is_truncated() {
        let query = parse_query(&query_bytes("a.cluster.local", TYPE_A)).unwrap();
        let record = |i: u8| Record {
            name: "a.cluster.local".into(),
            ttl: 5,
            data: Rdata::A(Ipv4Addr::new(10, 0, 0, i)),
        };
        let answer = Answer {
            rcode: Rcode::NoError,
            answers: (0..40).map(record).collect(),
            authority: Vec::new(),
            additional: Vec::new(),
        };
        let out = response(&query, &answer, 512);
        assert_eq!(out[2] & 0x02, 0x02, "TC set");
        assert_eq!(&out[6..8], &[0, 0], "no answers");
        assert!(response(&query, &answer, 65535).len() > 512);
    }

    #[test]
    fn malformed_messages_are_refused_not_panicked_on() {
        assert_eq!(parse_query(&[1, 2, 3]), Err(Malformed::NoHeader));
        let mut q = query_bytes("x.cluster.local", TYPE_A);
        q.truncate(q.len() - 3);
        assert!(matches!(
            parse_query(&q),
            Err(Malformed::Refuse {
                rcode: Rcode::FormErr,
                ..
            })
        ));
        let mut pointer = query_bytes("x", TYPE_A);
        pointer[12] = 0xc0;
        assert!(matches!(
            parse_query(&pointer),
            Err(Malformed::Refuse { .. })
        ));
        let mut chaos = query_bytes("version.bind", 16);
        let n = chaos.len();
        chaos[n - 1] = 3;
        assert!(matches!(
            parse_query(&chaos),
            Err(Malformed::Refuse {
                rcode: Rcode::Refused,
                ..
            })
        ));
        let refusal = refusal(7, 0x0100, Rcode::FormErr);
        assert_eq!(&refusal[..4], &[0, 7, 0x81, 0x01]);
    }
}
