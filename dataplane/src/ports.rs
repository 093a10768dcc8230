//! Per-worker pools of RTP/RTCP port pairs.
//!
//! An interface's range is cut into even/odd pairs; pair `k` belongs to worker
//! `k % workers`, so a requested port names its worker and a session re-created
//! after a restart lands where its ports are. Allocation scans a bitmap from a
//! rotating cursor: a freed pair is reused as late as possible, so stray packets
//! of an old call do not reach a new one.

/// The pairs of one interface that one worker owns.
#[derive(Debug)]
pub struct PortPool {
    first: u16,
    pairs: u32,
    workers: u32,
    worker: u32,
    used: Vec<u64>,
    free: u32,
    cursor: u32,
}

/// Why a port could not be had.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PortError {
    /// No free pair left.
    Exhausted,
    /// The requested port is odd, outside the range or another worker's.
    NotOurs,
    /// The requested pair is in use.
    Taken,
}

impl PortPool {
    /// The pool of `worker` (of `workers`) over `port_min..=port_max`.
    pub fn new(port_min: u16, port_max: u16, workers: u32, worker: u32) -> Self {
        let first = port_min.div_ceil(2).saturating_mul(2);
        let pairs = if port_max > first {
            (u32::from(port_max) - u32::from(first)).div_ceil(2)
        } else {
            0
        };
        let words = pairs.div_ceil(64) as usize;
        let mut pool = PortPool {
            first,
            pairs,
            workers: workers.max(1),
            worker,
            used: vec![0; words],
            free: 0,
            cursor: 0,
        };
        pool.free = (0..pairs).filter(|k| pool.owns_pair(*k)).count() as u32;
        pool
    }

    /// Which worker owns the pair that `rtp_port` starts, over a range.
    pub fn worker_of(port_min: u16, rtp_port: u16, workers: u32) -> Option<u32> {
        let first = port_min.div_ceil(2).saturating_mul(2);
        if rtp_port < first || !rtp_port.is_multiple_of(2) {
            return None;
        }
        Some((u32::from(rtp_port - first) / 2) % workers.max(1))
    }

    fn owns_pair(&self, k: u32) -> bool {
        k < self.pairs && k % self.workers == self.worker
    }

    fn is_used(&self, k: u32) -> bool {
        self.used
            .get((k / 64) as usize)
            .is_some_and(|w| w & (1 << (k % 64)) != 0)
    }

    fn set_used(&mut self, k: u32, on: bool) {
        if let Some(w) = self.used.get_mut((k / 64) as usize) {
            if on {
                *w |= 1 << (k % 64);
            } else {
                *w &= !(1 << (k % 64));
            }
        }
    }

    fn port_of(&self, k: u32) -> u16 {
        // k < pairs, so first + 2k <= port_max - 1 fits a u16.
        (u32::from(self.first) + 2 * k) as u16
    }

    /// Free pairs left.
    pub fn free(&self) -> u32 {
        self.free
    }

    /// Takes the next free pair; returns its RTP (even) port.
    pub fn alloc(&mut self) -> Result<u16, PortError> {
        if self.free == 0 {
            return Err(PortError::Exhausted);
        }
        // Start at the cursor, on one of our pairs.
        let step = self.workers;
        let mut k = self.cursor - self.cursor % step + self.worker;
        for _ in 0..=(self.pairs / step + 1) {
            if k >= self.pairs {
                k = self.worker;
            }
            if self.owns_pair(k) && !self.is_used(k) {
                self.set_used(k, true);
                self.free -= 1;
                self.cursor = k + step;
                return Ok(self.port_of(k));
            }
            k += step;
        }
        Err(PortError::Exhausted)
    }

    /// Takes a specific pair by its RTP port.
    pub fn take(&mut self, rtp_port: u16) -> Result<(), PortError> {
        let k = self.pair_index(rtp_port).ok_or(PortError::NotOurs)?;
        if self.is_used(k) {
            return Err(PortError::Taken);
        }
        self.set_used(k, true);
        self.free -= 1;
        Ok(())
    }

    /// Returns a pair.
    pub fn release(&mut self, rtp_port: u16) {
        if let Some(k) = self.pair_index(rtp_port) {
            if self.is_used(k) {
                self.set_used(k, false);
                self.free += 1;
            }
        }
    }

    fn pair_index(&self, rtp_port: u16) -> Option<u32> {
        if rtp_port < self.first || !rtp_port.is_multiple_of(2) {
            return None;
        }
        let k = u32::from(rtp_port - self.first) / 2;
        self.owns_pair(k).then_some(k)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_pairs_between_workers() {
        let mut w0 = PortPool::new(20000, 20015, 2, 0);
        let mut w1 = PortPool::new(20000, 20015, 2, 1);
        assert_eq!(w0.free() + w1.free(), 8);
        let a = w0.alloc().unwrap();
        let b = w1.alloc().unwrap();
        assert_eq!(PortPool::worker_of(20000, a, 2), Some(0));
        assert_eq!(PortPool::worker_of(20000, b, 2), Some(1));
        assert_eq!(a % 2, 0);
    }

    #[test]
    fn exhausts_then_recovers() {
        let mut p = PortPool::new(20000, 20007, 1, 0);
        let got: Vec<u16> = (0..4).map(|_| p.alloc().unwrap()).collect();
        assert_eq!(got, vec![20000, 20002, 20004, 20006]);
        assert_eq!(p.alloc(), Err(PortError::Exhausted));
        p.release(20002);
        assert_eq!(p.alloc(), Ok(20002));
    }

    #[test]
    fn reuses_freed_pairs_late() {
        let mut p = PortPool::new(20000, 20007, 1, 0);
        let a = p.alloc().unwrap();
        p.release(a);
        assert_ne!(p.alloc().unwrap(), a);
    }

    #[test]
    fn takes_requested_ports() {
        let mut p = PortPool::new(20001, 20009, 1, 0);
        assert_eq!(p.take(20001), Err(PortError::NotOurs));
        assert_eq!(p.take(20004), Ok(()));
        assert_eq!(p.take(20004), Err(PortError::Taken));
        assert_eq!(p.take(30000), Err(PortError::NotOurs));
        let mut q = PortPool::new(20000, 20015, 2, 1);
        assert_eq!(q.take(20000), Err(PortError::NotOurs));
        assert_eq!(q.take(20002), Ok(()));
    }
}
