//! The Hello's optional parts: capability bits, the authentication
//! fields ([`CAP_AUTH`]) and the host identity ([`CAP_IDENT`]).

use bytes::{Buf, Bytes};

use super::DecodeError;

/// Hello capability: the sender's receive windows start small and grow
/// (the `window` of `Open`/`OpenOk` is the credit granted so far, not the
/// largest message); its Hello carries `max_message` and `open_credit`,
/// and data may follow an `Open` before the `OpenOk`, within
/// `open_credit`. Without it the peer is an older build: windows are
/// granted whole at open, as it expects.
pub const CAP_WINDOWS: u32 = 0x01;
/// Hello capability: the sender has a pre-shared key and requires the
/// peer to prove it holds it too; its Hello carries [`HelloAuth`] (see
/// `session::auth`).
pub const CAP_AUTH: u32 = 0x02;

/// The authentication fields of a Hello with [`CAP_AUTH`], appended after
/// `open_credit`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HelloAuth {
    /// The sender's random nonce for this link.
    pub nonce: [u8; 16],
    /// With `seen_peer`: HMAC-SHA256 over both identities and both nonces
    /// (see `session::auth`); zeros before the sender has the peer's nonce.
    pub mac: [u8; 32],
}

/// Bytes of [`HelloAuth`] on the wire.
pub const HELLO_AUTH_LEN: usize = 48;

/// Hello capability: the Hello carries the sender's host identity and
/// host name ([`HelloIdent`]), appended after the auth fields (or after
/// `open_credit` without them). Zero-configuration `up` derives the
/// link's addresses from both identities, and `status` shows the peer's
/// host name.
pub const CAP_IDENT: u32 = 0x04;

/// Longest host name a Hello carries: 64 bytes, Linux's `HOST_NAME_MAX`.
pub const MAX_HOSTNAME: usize = 64;

/// The host fields of a Hello with [`CAP_IDENT`]: 16 bytes of identity,
/// one length byte, then the host name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HelloIdent {
    /// The sender's host identity (on Thunderbolt hardware, the UUID of
    /// its host router; stable across reboots).
    pub host_id: [u8; 16],
    /// The sender's host name: 1..=[`MAX_HOSTNAME`] bytes of
    /// `A-Z a-z 0-9 . - _` (see [`HelloIdent::new`]).
    pub hostname: String,
}

impl HelloIdent {
    /// An identity with `hostname` made safe to carry and to show: bytes
    /// outside `A-Z a-z 0-9 . - _` become `-`, it is cut to
    /// [`MAX_HOSTNAME`] bytes, and an empty name becomes `localhost`.
    pub fn new(host_id: [u8; 16], hostname: &str) -> Self {
        let mut h: String = hostname
            .chars()
            .map(|c| if is_hostname_char(c) { c } else { '-' })
            .take(MAX_HOSTNAME)
            .collect();
        if h.is_empty() {
            h.push_str("localhost");
        }
        Self {
            host_id,
            hostname: h,
        }
    }

    /// Bytes on the wire.
    pub fn encoded_len(&self) -> usize {
        16 + 1 + self.hostname.len()
    }
}

/// The [`HelloIdent`] fields of a Hello body with [`CAP_IDENT`].
pub(super) fn decode_ident(f: &mut Bytes) -> Result<HelloIdent, DecodeError> {
    let bad = |what| DecodeError::Malformed {
        record: "Hello",
        what,
    };
    if f.len() < 17 {
        return Err(bad("CAP_IDENT without its identity and host name"));
    }
    let mut host_id = [0u8; 16];
    f.copy_to_slice(&mut host_id);
    let n = usize::from(f.get_u8());
    if n == 0 || n > MAX_HOSTNAME || f.len() < n {
        return Err(bad("host name length out of range"));
    }
    let name = f.split_to(n);
    if !name.iter().all(|b| is_hostname_char(char::from(*b))) {
        return Err(bad("host name with bytes outside A-Z a-z 0-9 . - _"));
    }
    // All ASCII, checked above.
    let hostname = String::from_utf8_lossy(&name).into_owned();
    Ok(HelloIdent { host_id, hostname })
}

fn is_hostname_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_')
}

#[cfg(test)]
mod tests {
    use bytes::{Bytes, BytesMut};

    use super::*;
    use crate::wire::{Record, VERSION};

    fn hello(auth: Option<HelloAuth>, ident: Option<HelloIdent>) -> Record {
        Record::Hello {
            version: VERSION,
            seen_peer: false,
            caps: CAP_WINDOWS,
            max_batch: 1 << 18,
            max_record: 1 << 18,
            session_id: 7,
            resume_of: 0,
            max_message: 1000,
            open_credit: 2000,
            auth,
            ident: ident.map(Box::new),
        }
    }

    fn encode(r: &Record) -> Bytes {
        let mut b = BytesMut::new();
        r.encode_head(&mut b);
        assert_eq!(b.len(), r.encoded_len());
        b.freeze()
    }

    #[test]
    fn identity_round_trips_with_and_without_auth() {
        let ident = HelloIdent::new([9; 16], "laptop-b");
        let auth = HelloAuth {
            nonce: [1; 16],
            mac: [2; 32],
        };
        for r in [
            hello(None, Some(ident.clone())),
            hello(Some(auth), Some(ident.clone())),
            hello(Some(auth), None),
        ] {
            let mut b = encode(&r);
            let back = Record::decode(&mut b).expect("decodes");
            let Record::Hello {
                caps,
                auth: a,
                ident: i,
                ..
            } = &back
            else {
                panic!("not a Hello: {back:?}");
            };
            let Record::Hello {
                auth: a0,
                ident: i0,
                ..
            } = &r
            else {
                unreachable!()
            };
            assert_eq!((a, i), (a0, i0));
            assert_eq!(caps & CAP_IDENT != 0, i.is_some());
            assert_eq!(caps & CAP_AUTH != 0, a.is_some());
            assert!(b.is_empty());
        }
    }

    #[test]
    fn host_names_are_made_safe_to_carry() {
        assert_eq!(HelloIdent::new([0; 16], "laptop-b").hostname, "laptop-b");
        assert_eq!(HelloIdent::new([0; 16], "a b\n\u{e9}").hostname, "a-b--");
        assert_eq!(HelloIdent::new([0; 16], "").hostname, "localhost");
        assert_eq!(
            HelloIdent::new([0; 16], &"x".repeat(300)).hostname.len(),
            MAX_HOSTNAME
        );
    }

    /// A hostile Hello: CAP_IDENT with a short tail, a zero or too long
    /// name length, a name with control bytes. Each is a clear decode
    /// error, never a panic or a name shown as sent.
    #[test]
    fn broken_identities_are_refused() {
        let good = encode(&hello(None, Some(HelloIdent::new([3; 16], "peer"))));
        let name_at = good.len() - 4;
        let len_at = name_at - 1;
        let mut cases: Vec<(Vec<u8>, &str)> = Vec::new();
        let mut short = good.to_vec();
        short.truncate(len_at - 3);
        cases.push((short, "CAP_IDENT without"));
        let mut zero = good.to_vec();
        zero[len_at] = 0;
        cases.push((zero, "length out of range"));
        let mut long = good.to_vec();
        long[len_at] = 65;
        cases.push((long, "length out of range"));
        let mut past = good.to_vec();
        past[len_at] = 5;
        cases.push((past, "length out of range"));
        let mut ctl = good.to_vec();
        ctl[name_at + 1] = b'\n';
        cases.push((ctl, "outside A-Z"));
        for (mut bytes, want) in cases {
            // The record length follows the truncation.
            let body = (bytes.len() - crate::wire::RECORD_HEADER_LEN) as u32;
            bytes[4..8].copy_from_slice(&body.to_le_bytes());
            let e = Record::decode(&mut Bytes::from(bytes)).expect_err("refused");
            assert!(e.to_string().contains(want), "{e} (wanted {want})");
        }
    }
}
