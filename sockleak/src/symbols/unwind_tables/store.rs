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

#[cfg(test)]
mod tests {
    use super::*;

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
