//! Optional peer authentication with a pre-shared key, at the handshake.
//!
//! Thunderbolt topology is not trust: anything plugged into the port is a
//! peer. With a key configured on both hosts, each side proves it holds the
//! key before the link comes up, by HMAC-SHA256 (RFC 2104, the `hmac` and
//! `sha2` crates of RustCrypto) over both sides' fresh nonces and both
//! session identities:
//!
//! ```text
//! A -> B  Hello { session_id: a, nonce: Na, mac: 0 }
//! B -> A  Hello { session_id: b, nonce: Nb, mac: HMAC(key, LABEL | b | a | Nb | Na) }
//! A -> B  Hello { session_id: a, nonce: Na, mac: HMAC(key, LABEL | a | b | Na | Nb),
//!                 seen_peer }          (A took B's Hello: its MAC checked out)
//! B -> A  Hello { ..., seen_peer }     (B took A's)
//! ```
//!
//! The proof travels in every Hello once the sender has the peer's nonce;
//! `seen_peer` keeps its meaning without a key (the sender *took* the
//! receiver's Hello, so it reads what follows in step), and a side goes
//! up only on a taken Hello flagged "seen", as without a key.
//!
//! A Hello only counts once its MAC checks out against *our* nonce of this
//! link (16 random bytes, new for every link): until then it changes
//! nothing (no resume, no restart, no channel reset), and no other record
//! is accepted. So:
//!
//! * a peer without the key never gets a link up, and a wrong key is
//!   refused and counted, once per link ([`SessionStats::auth_failures`]);
//!   the bridge keeps answering Hellos and waits for the right peer;
//! * an old connection's byte stream replayed on a new link carries MACs
//!   over old nonces: refused;
//! * a resume is bound to the session identities inside the MAC: a new
//!   peer cannot take over an old session's channels by naming its id;
//! * our own Hellos reflected back are refused already by identity, and
//!   the MAC's order (sender first) would refuse them too.
//!
//! What it does not do: encrypt, or authenticate the records after the
//! handshake (they carry a CRC against bit errors, not a MAC). A device
//! spliced into the cable that relays the handshake and then injects or
//! reads records is not stopped; see `docs/auth.md`.
//!
//! [`SessionStats::auth_failures`]: super::SessionStats::auth_failures

use std::fmt;
use std::sync::Arc;

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Bytes of a link nonce.
pub const NONCE_LEN: usize = 16;
/// Bytes of a Hello's MAC (HMAC-SHA256).
pub const MAC_LEN: usize = 32;
/// Shortest key accepted: 128 bits of secret, as hex or text, at least
/// 32 characters (`tbbridge genkey` writes 64 hex digits).
pub const MIN_KEY_LEN: usize = 32;
/// Domain separation: a MAC of this protocol is never one of another.
const LABEL: &[u8] = b"tbbridge hello auth v1";

/// A pre-shared key. Its `Debug` never shows the secret.
#[derive(Clone, PartialEq, Eq)]
pub struct Psk(Arc<[u8]>);

impl fmt::Debug for Psk {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Psk(<secret>)")
    }
}

/// A key that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PskError {
    /// Too short to be a secret.
    #[error("a pre-shared key needs at least {MIN_KEY_LEN} characters, this one has {0}")]
    TooShort(usize),
}

impl Psk {
    /// A key from its bytes (surrounding whitespace, such as a trailing
    /// newline, is not part of it).
    pub fn new(bytes: &[u8]) -> Result<Psk, PskError> {
        let b = bytes.trim_ascii();
        if b.len() < MIN_KEY_LEN {
            return Err(PskError::TooShort(b.len()));
        }
        Ok(Psk(b.into()))
    }

    fn mac(&self) -> Hmac<Sha256> {
        // HMAC takes keys of any length.
        <Hmac<Sha256> as Mac>::new_from_slice(&self.0).expect("HMAC accepts any key length")
    }

    /// The MAC that `sender` puts in its Hello to `receiver`.
    pub fn sign(
        &self,
        sender: u64,
        receiver: u64,
        sender_nonce: &[u8; NONCE_LEN],
        receiver_nonce: &[u8; NONCE_LEN],
    ) -> [u8; MAC_LEN] {
        let mut m = self.mac();
        feed(&mut m, sender, receiver, sender_nonce, receiver_nonce);
        m.finalize().into_bytes().into()
    }

    /// Whether `mac` is the one `sender` owes `receiver` (constant-time).
    pub fn verify(
        &self,
        sender: u64,
        receiver: u64,
        sender_nonce: &[u8; NONCE_LEN],
        receiver_nonce: &[u8; NONCE_LEN],
        mac: &[u8; MAC_LEN],
    ) -> bool {
        let mut m = self.mac();
        feed(&mut m, sender, receiver, sender_nonce, receiver_nonce);
        m.verify_slice(mac).is_ok()
    }
}

fn feed(
    m: &mut Hmac<Sha256>,
    sender: u64,
    receiver: u64,
    sender_nonce: &[u8; NONCE_LEN],
    receiver_nonce: &[u8; NONCE_LEN],
) {
    m.update(LABEL);
    m.update(&sender.to_le_bytes());
    m.update(&receiver.to_le_bytes());
    m.update(sender_nonce);
    m.update(receiver_nonce);
}

/// Why a peer's Hello was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthFailure {
    /// We have a key; the peer's Hello proves none (no key configured
    /// there).
    PeerHasNoKey,
    /// The peer requires a key; none is configured here.
    NoKeyHere,
    /// The peer's MAC is wrong: another key, or an old link's Hello.
    WrongKey,
}

impl fmt::Display for AuthFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AuthFailure::PeerHasNoKey => "the peer has no pre-shared key configured",
            AuthFailure::NoKeyHere => {
                "the peer requires a pre-shared key and none is configured here"
            }
            AuthFailure::WrongKey => "the peer's pre-shared key is not ours",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signs_and_verifies_one_direction_only() {
        let k = Psk::new(b"0123456789abcdef0123456789abcdef\n").expect("key");
        let (na, nb) = ([1u8; NONCE_LEN], [2u8; NONCE_LEN]);
        let mac = k.sign(7, 9, &na, &nb);
        assert!(k.verify(7, 9, &na, &nb, &mac));
        // Reflected (sender and receiver swapped), other nonces, other key.
        assert!(!k.verify(9, 7, &nb, &na, &mac));
        assert!(!k.verify(7, 9, &na, &[3u8; NONCE_LEN], &mac));
        let other = Psk::new(b"0123456789abcdef0123456789abcdeX").expect("key");
        assert!(!other.verify(7, 9, &na, &nb, &mac));
    }

    #[test]
    fn short_keys_are_refused_and_debug_hides_the_secret() {
        assert_eq!(Psk::new(b"  short \n"), Err(PskError::TooShort(5)));
        let k = Psk::new(&[b'z'; 40]).expect("key");
        assert!(!format!("{k:?}").contains('z'));
    }
}
