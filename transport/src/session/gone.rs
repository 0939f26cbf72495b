//! Channels we let go of while the peer may not know yet.
//!
//! When a channel goes on our side its last word to the peer is a `Reset`
//! (we aborted it), an `OpenReject` (we refused it), or, for a channel
//! finished both ways, our `Close` and (reliable channels) the final
//! acknowledgement. A finished channel goes as soon as our `Close` is out
//! and everything we sent is acknowledged: nothing confirms the `Close`
//! itself. A cable pull can lose any of these, and the peer then still
//! holds the channel: it asks to resume it, sends its `Open` again, or
//! (datagram channels, which do not resume) keeps it forever. So the last
//! word is kept here until a pong proves the peer read it, and
//!
//! * sent again on every new link with the same peer;
//! * given again when the peer asks to resume the channel or repeats its
//!   `Open` (a finished channel gets its `Close` and acknowledgement, not a
//!   `Reset`: everything was delivered, its application must not see an
//!   abort; a repeated `Open` of it first gets the `OpenOk` the opener
//!   never saw; a repeated `Open` crossing our refusal is refused again,
//!   not taken for a new channel);
//! * the id is not reused while it is here.
//!
//! One entry per channel, however often the peer asks, and at most
//! [`MAX_GONE`] in all: a peer that never answers a ping cannot make this
//! grow without bound.

use std::collections::BTreeMap;

use super::ChannelId;
use crate::wire::Record;

/// Most channels remembered at once. A ping goes out as soon as a last
/// word did, so entries live about one round trip; this bound only bites
/// for a peer that never answers pings, and then costs ~3 MiB at most.
pub(crate) const MAX_GONE: usize = 65_536;

/// The last thing we told the peer about a channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LastWord {
    /// We aborted it.
    Reset(u8),
    /// We refused the peer's `Open` (reason code).
    Rejected(u8),
    /// Finished both ways: our `Close` at `final_offset` went out, and on a
    /// reliable channel everything up to `received` arrived (`None`: a
    /// datagram channel, nothing to acknowledge).
    Finished {
        /// Our final send offset (the offset of our `Close`).
        final_offset: u64,
        /// Our final receive offset, on a reliable channel.
        received: Option<u64>,
    },
}

/// Not yet sent on the current link: no pong can confirm it.
const UNSENT: u64 = u64::MAX;

#[derive(Debug, Default)]
pub(crate) struct Gone {
    /// Our id of the channel → its last word, and the token of the first
    /// ping sent after it (a pong for that ping confirms it).
    map: BTreeMap<u32, (LastWord, u64)>,
}

impl Gone {
    pub fn contains(&self, id: ChannelId) -> bool {
        self.map.contains_key(&id.0)
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn get(&self, id: ChannelId) -> Option<LastWord> {
        self.map.get(&id.0).map(|(w, _)| *w)
    }

    /// Remembers the last word of a channel that just went.
    pub fn insert(&mut self, id: ChannelId, word: LastWord) {
        if self.map.len() >= MAX_GONE && !self.map.contains_key(&id.0) {
            // Bounded: forget the lowest id. The peer ignored every ping
            // for a long while; at worst it keeps a channel we dropped.
            self.map.pop_first();
        }
        self.map.insert(id.0, (word, UNSENT));
    }

    /// The records that say `word` about `id`; `reopen`: in answer to a
    /// repeated `Open` (the opener never saw our `OpenOk`).
    pub fn records(id: ChannelId, word: LastWord, reopen: bool) -> impl Iterator<Item = Record> {
        let chan = id.peer_view();
        let recs = match word {
            LastWord::Reset(code) => [Some(Record::Reset { chan, code }), None, None],
            LastWord::Rejected(reason) => [Some(Record::OpenReject { chan, reason }), None, None],
            LastWord::Finished {
                final_offset,
                received,
            } => [
                // Nothing more to take: the peer finished too.
                reopen.then_some(Record::OpenOk { chan, window: 0 }),
                Some(Record::Close { chan, final_offset }),
                received.map(|received| Record::Window {
                    chan,
                    received,
                    limit: received,
                    resume: false,
                }),
            ],
        };
        recs.into_iter().flatten()
    }

    /// `rec` is going out, and the next ping will carry `token`: returns
    /// whether it was a last word (then a ping should follow soon).
    pub fn sent(&mut self, rec: &Record, token: u64) -> bool {
        let chan = match rec {
            Record::Reset { chan, .. }
            | Record::Window { chan, .. }
            | Record::OpenReject { chan, .. }
            | Record::OpenOk { chan, .. }
            | Record::Close { chan, .. } => *chan,
            _ => return false,
        };
        match self.map.get_mut(&(chan ^ 1)) {
            Some((_, t)) if *t == UNSENT => {
                *t = token;
                true
            }
            _ => false,
        }
    }

    /// A pong for ping `token` came back: everything sent before that ping
    /// was read.
    pub fn confirm(&mut self, token: u64) {
        self.map.retain(|_, (_, t)| *t > token);
    }

    /// The link went down: nothing sent on it is confirmed any more. Every
    /// last word goes out again on the next link.
    pub fn link_down(&mut self) -> impl Iterator<Item = Record> + '_ {
        self.map.iter_mut().flat_map(|(id, (w, t))| {
            *t = UNSENT;
            Self::records(ChannelId(*id), *w, false)
        })
    }

    /// The peer restarted: it knows none of these channels.
    pub fn clear(&mut self) {
        self.map.clear();
    }
}
