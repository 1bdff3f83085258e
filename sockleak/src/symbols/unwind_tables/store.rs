//! Where files' rows go in the kernel's row array (pure): first fit over free extents, each
//! file's rows contiguous (its binary-search range). A freed extent waits out a grace period
//! before it is reused: a walk that read a process's mappings just before they changed may
//! still be reading the old rows.

/// Nanoseconds a freed extent waits before reuse (a walk takes microseconds).
pub const GRACE_NS: u64 = 200_000_000;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Store {
    cap: u32,
    /// Free extents (first, len), sorted by first, never adjacent.
    free: Vec<(u32, u32)>,
    /// Freed extents and when they were freed.
    waiting: Vec<(u32, u32, u64)>,
}

impl Store {
    pub fn new(cap: u32) -> Store {
        Store {
            cap,
            free: if cap > 0 { vec![(0, cap)] } else { vec![] },
            waiting: Vec::new(),
        }
    }

    pub fn capacity(&self) -> u32 {
        self.cap
    }

    /// Rows neither free nor waiting.
    pub fn used(&self) -> u64 {
        let free: u64 = self.free.iter().map(|f| f.1 as u64).sum();
        let waiting: u64 = self.waiting.iter().map(|w| w.1 as u64).sum();
        self.cap as u64 - free - waiting
    }

    /// Rows that will be free once the grace period ends, or are.
    pub fn reclaimable(&self) -> u64 {
        self.free.iter().map(|f| f.1 as u64).sum::<u64>()
            + self.waiting.iter().map(|w| w.1 as u64).sum::<u64>()
    }

    /// The first extent of `n` rows, taken; None when no free extent is that long.
    pub fn alloc(&mut self, n: u32) -> Option<u32> {
        if n == 0 {
            return None;
        }
        let i = self.free.iter().position(|f| f.1 >= n)?;
        let (first, len) = self.free[i];
        if len == n {
            self.free.remove(i);
        } else {
            self.free[i] = (first + n, len - n);
        }
        Some(first)
    }

    /// Gives back `n` rows at `first` (reusable after the grace period).
    pub fn release(&mut self, first: u32, n: u32, now_ns: u64) {
        if n > 0 {
            self.waiting.push((first, n, now_ns));
        }
    }

    /// Extents whose grace period has passed become free.
    pub fn settle(&mut self, now_ns: u64) {
        let (done, wait): (Vec<_>, Vec<_>) = self
            .waiting
            .iter()
            .partition(|w| now_ns.saturating_sub(w.2) >= GRACE_NS);
        self.waiting = wait;
        for (first, n, _) in done {
            self.insert_free(first, n);
        }
    }

    /// Whether some extent is waiting out its grace period.
    pub fn has_waiting(&self) -> bool {
        !self.waiting.is_empty()
    }

    fn insert_free(&mut self, first: u32, n: u32) {
        let i = self.free.partition_point(|f| f.0 < first);
        self.free.insert(i, (first, n));
        // Merge with the next, then the previous neighbour.
        if i + 1 < self.free.len() && self.free[i].0 + self.free[i].1 == self.free[i + 1].0 {
            self.free[i].1 += self.free[i + 1].1;
            self.free.remove(i + 1);
        }
        if i > 0 && self.free[i - 1].0 + self.free[i - 1].1 == self.free[i].0 {
            self.free[i - 1].1 += self.free[i].1;
            self.free.remove(i);
        }
    }

    /// The longest free extent now.
    pub fn largest_free(&self) -> u32 {
        self.free.iter().map(|f| f.1).max().unwrap_or(0)
    }
}

/// A file whose rows could make room.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate<K> {
    pub key: K,
    pub rows: u32,
    /// Registered processes mapping it.
    pub users: usize,
    /// When it was placed or last asked for.
    pub last_used_ns: u64,
}

/// A file in use placed (or asked for) this recently is not evicted for another: two files
/// that do not fit together would otherwise evict each other forever.
pub const EVICT_GUARD_NS: u64 = 10_000_000_000;

/// The files to evict so that `need` rows are free once freed rows settle, `free` being free
/// (or freed) already: files no process maps first, least recently used first; then those
/// fewest processes map. Nothing when that would not make room.
pub fn victims<K: Ord + Clone>(
    mut cands: Vec<Candidate<K>>,
    need: u64,
    free: u64,
    now_ns: u64,
) -> Vec<K> {
    cands.retain(|c| c.users == 0 || now_ns.saturating_sub(c.last_used_ns) >= EVICT_GUARD_NS);
    cands.sort_by(|a, b| (a.users, a.last_used_ns, &a.key).cmp(&(b.users, b.last_used_ns, &b.key)));
    let mut got = free;
    let mut out = Vec::new();
    for c in cands {
        if got >= need {
            break;
        }
        got += c.rows as u64;
        out.push(c.key);
    }
    if got < need { Vec::new() } else { out }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cand(
        key: &'static str,
        rows: u32,
        users: usize,
        last_used_ns: u64,
    ) -> Candidate<&'static str> {
        Candidate {
            key,
            rows,
            users,
            last_used_ns,
        }
    }

    #[test]
    fn unused_files_go_first_oldest_first_then_the_least_shared() {
        let now = 100 * EVICT_GUARD_NS;
        let c = vec![
            cand("libc", 100, 40, 0),
            cand("old-unused", 10, 0, 1),
            cand("new-unused", 10, 0, now - 1),
            cand("app", 50, 1, 0),
        ];
        assert_eq!(
            victims(c.clone(), 15, 0, now),
            vec!["old-unused", "new-unused"]
        );
        assert_eq!(victims(c.clone(), 5, 0, now), vec!["old-unused"]);
        assert_eq!(
            victims(c.clone(), 60, 0, now),
            vec!["old-unused", "new-unused", "app"],
            "then the file one process maps, before the one forty map"
        );
        assert_eq!(
            victims(c.clone(), 60, 60, now),
            Vec::<&str>::new(),
            "room already"
        );
        assert_eq!(
            victims(c, 1000, 0, now),
            Vec::<&str>::new(),
            "would not fit anyway"
        );
    }

    #[test]
    fn files_in_use_placed_recently_stay() {
        let now = 2 * EVICT_GUARD_NS;
        let c = vec![cand("hot", 100, 1, now - 1), cand("cold", 100, 1, 0)];
        assert_eq!(victims(c.clone(), 100, 0, now), vec!["cold"]);
        assert_eq!(victims(c, 150, 0, now), Vec::<&str>::new());
    }

    #[test]
    fn first_fit_and_exact_fit() {
        let mut s = Store::new(100);
        assert_eq!(s.alloc(30), Some(0));
        assert_eq!(s.alloc(70), Some(30));
        assert_eq!(s.alloc(1), None, "full");
        assert_eq!(s.used(), 100);
        assert_eq!(s.alloc(0), None);
    }

    #[test]
    fn freed_rows_wait_out_the_grace_period() {
        let mut s = Store::new(100);
        let a = s.alloc(40).unwrap();
        let _b = s.alloc(60).unwrap();
        s.release(a, 40, 1_000);
        assert_eq!(s.alloc(10), None, "not reusable while a walk may read them");
        assert_eq!(s.reclaimable(), 40);
        s.settle(1_000 + GRACE_NS - 1);
        assert_eq!(s.alloc(10), None);
        s.settle(1_000 + GRACE_NS);
        assert!(!s.has_waiting());
        assert_eq!(s.alloc(40), Some(0));
    }

    #[test]
    fn neighbours_merge() {
        let mut s = Store::new(90);
        let a = s.alloc(30).unwrap();
        let b = s.alloc(30).unwrap();
        let c = s.alloc(30).unwrap();
        s.release(a, 30, 0);
        s.release(c, 30, 0);
        s.settle(GRACE_NS);
        assert_eq!(s.largest_free(), 30, "two holes, not adjacent");
        s.release(b, 30, 0);
        s.settle(GRACE_NS);
        assert_eq!(s.largest_free(), 90, "one extent again");
        assert_eq!(s.alloc(90), Some(0));
    }

    #[test]
    fn empty_store() {
        let mut s = Store::new(0);
        assert_eq!(s.alloc(1), None);
        assert_eq!(s.used(), 0);
    }
}
