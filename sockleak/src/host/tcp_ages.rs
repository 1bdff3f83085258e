//! How long TCP sockets have been in a state, from the socket tables polled every interval
//! (only the states a report dates: CLOSE_WAIT and the other closing states, SYN_SENT). No
//! kernel hook runs per TCP state change, so untraced connections pay nothing for this.

use hashbrown::HashMap;

/// When sockleak first saw a socket in its current state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seen {
    pub state: u8,
    pub since_ns: u64,
    /// Already in this state at the first poll: the real start is earlier.
    pub at_start: bool,
}

#[derive(Debug, Default)]
pub struct StateAges {
    seen: HashMap<u64, Seen>,
    polled: bool,
}

impl StateAges {
    /// One poll's observations (socket cookie, TCP state) across every traced namespace.
    /// Sockets no longer listed (closed, or moved to a state not polled) are forgotten.
    pub fn observe(&mut self, now_ns: u64, observed: impl IntoIterator<Item = (u64, u8)>) {
        let at_start = !self.polled;
        let mut next = HashMap::new();
        for (cookie, state) in observed {
            let s = match self.seen.get(&cookie) {
                Some(s) if s.state == state => *s,
                _ => Seen {
                    state,
                    since_ns: now_ns,
                    at_start,
                },
            };
            next.insert(cookie, s);
        }
        self.seen = next;
        self.polled = true;
    }

    /// When the socket with this inet_diag cookie was first seen in `state`.
    pub fn since(&self, cookie: u64, state: u8) -> Option<Seen> {
        self.seen.get(&cookie).filter(|s| s.state == state).copied()
    }

    pub fn len(&self) -> usize {
        self.seen.len()
    }

    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CLOSE_WAIT: u8 = 8;
    const LAST_ACK: u8 = 9;

    #[test]
    fn first_seen_survives_polls_and_resets_on_change() {
        let mut a = StateAges::default();
        a.observe(10, [(1, CLOSE_WAIT)]);
        assert_eq!(
            a.since(1, CLOSE_WAIT),
            Some(Seen {
                state: CLOSE_WAIT,
                since_ns: 10,
                at_start: true
            })
        );
        a.observe(20, [(1, CLOSE_WAIT), (2, CLOSE_WAIT)]);
        assert_eq!(a.since(1, CLOSE_WAIT).unwrap().since_ns, 10);
        let two = a.since(2, CLOSE_WAIT).unwrap();
        assert_eq!((two.since_ns, two.at_start), (20, false));
        // 1 moved on to LAST_ACK: a new state, a new start; 2 is gone.
        a.observe(30, [(1, LAST_ACK)]);
        assert_eq!(a.since(1, CLOSE_WAIT), None);
        assert_eq!(a.since(1, LAST_ACK).unwrap().since_ns, 30);
        assert_eq!(a.since(2, CLOSE_WAIT), None);
        assert_eq!(a.len(), 1);
    }
}
