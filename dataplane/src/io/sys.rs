//! Small system helpers: socket address bytes, media sockets, eventfd, CPU
//! pinning and the file descriptor limit.
#![allow(unsafe_code)]

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use socket2::{Domain, Protocol, Socket, Type};

/// Room for a `sockaddr_in6`, the largest address we send to or receive from.
pub const SOCKADDR_LEN: usize = std::mem::size_of::<libc::sockaddr_in6>();

/// A raw socket address in kernel layout, aligned for `sockaddr_in6`.
#[derive(Clone, Copy)]
#[repr(C, align(8))]
pub struct RawAddr {
    /// The bytes.
    pub bytes: [u8; SOCKADDR_LEN],
    /// How many are used.
    pub len: libc::socklen_t,
}

impl Default for RawAddr {
    fn default() -> Self {
        RawAddr {
            bytes: [0; SOCKADDR_LEN],
            len: 0,
        }
    }
}

impl RawAddr {
    /// Writes `addr` in kernel layout.
    #[inline]
    pub fn set(&mut self, addr: SocketAddr) {
        self.len = encode_sockaddr(addr, &mut self.bytes) as libc::socklen_t;
    }

    /// Pointer for system calls.
    #[inline]
    pub fn as_ptr(&self) -> *const libc::sockaddr {
        self.bytes.as_ptr().cast()
    }
}

/// Decodes a kernel `sockaddr_in`/`sockaddr_in6` from bytes (no unsafe: the
/// family is native-endian, port and address are network order).
#[inline]
pub fn decode_sockaddr(b: &[u8]) -> Option<SocketAddr> {
    let family = u16::from_ne_bytes(b.get(0..2)?.try_into().ok()?);
    let port = u16::from_be_bytes(b.get(2..4)?.try_into().ok()?);
    match i32::from(family) {
        libc::AF_INET => {
            let ip: [u8; 4] = b.get(4..8)?.try_into().ok()?;
            Some(SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::from(ip), port)))
        }
        libc::AF_INET6 => {
            let flow = u32::from_be_bytes(b.get(4..8)?.try_into().ok()?);
            let ip: [u8; 16] = b.get(8..24)?.try_into().ok()?;
            let scope = u32::from_ne_bytes(b.get(24..28)?.try_into().ok()?);
            Some(SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(ip),
                port,
                flow,
                scope,
            )))
        }
        _ => None,
    }
}

/// Encodes `addr` into `out` in kernel layout; returns the length used.
#[inline]
pub fn encode_sockaddr(addr: SocketAddr, out: &mut [u8; SOCKADDR_LEN]) -> usize {
    match addr {
        SocketAddr::V4(a) => {
            let (fam, rest) = out.split_at_mut(2);
            fam.copy_from_slice(&(libc::AF_INET as u16).to_ne_bytes());
            let (port, rest) = rest.split_at_mut(2);
            port.copy_from_slice(&a.port().to_be_bytes());
            let (ip, rest) = rest.split_at_mut(4);
            ip.copy_from_slice(&a.ip().octets());
            rest.fill(0);
            std::mem::size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(a) => {
            let (fam, rest) = out.split_at_mut(2);
            fam.copy_from_slice(&(libc::AF_INET6 as u16).to_ne_bytes());
            let (port, rest) = rest.split_at_mut(2);
            port.copy_from_slice(&a.port().to_be_bytes());
            let (flow, rest) = rest.split_at_mut(4);
            flow.copy_from_slice(&a.flowinfo().to_be_bytes());
            let (ip, scope) = rest.split_at_mut(16);
            ip.copy_from_slice(&a.ip().octets());
            scope.copy_from_slice(&a.scope_id().to_ne_bytes());
            SOCKADDR_LEN
        }
    }
}

/// Opens a non-blocking UDP socket bound to `ip:port` with the given buffer
/// sizes. Buffers are forced past `rmem_max`/`wmem_max` when the process may
/// (CAP_NET_ADMIN), else set as far as the kernel allows.
pub fn media_socket(ip: IpAddr, port: u16, rcvbuf: usize, sndbuf: usize) -> io::Result<Socket> {
    let domain = if ip.is_ipv4() {
        Domain::IPV4
    } else {
        Domain::IPV6
    };
    let s = Socket::new(
        domain,
        Type::DGRAM.nonblocking().cloexec(),
        Some(Protocol::UDP),
    )?;
    if ip.is_ipv6() {
        s.set_only_v6(true)?;
    }
    s.bind(&SocketAddr::new(ip, port).into())?;
    if force_buf(&s, libc::SO_RCVBUFFORCE, rcvbuf).is_err() {
        let _ = s.set_recv_buffer_size(rcvbuf);
    }
    if force_buf(&s, libc::SO_SNDBUFFORCE, sndbuf).is_err() {
        let _ = s.set_send_buffer_size(sndbuf);
    }
    Ok(s)
}

fn force_buf(s: &Socket, opt: libc::c_int, size: usize) -> io::Result<()> {
    let v: libc::c_int = size.min(i32::MAX as usize / 2) as libc::c_int;
    // SAFETY: a valid fd, a pointer to a live c_int and its exact size.
    let rc = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            opt,
            (&v as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// An eventfd used to wake a worker when a command is queued.
#[derive(Debug)]
pub struct EventFd(OwnedFd);

impl EventFd {
    /// A new non-blocking eventfd.
    pub fn new() -> io::Result<Self> {
        // SAFETY: plain system call; the result is checked.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fd is a fresh descriptor we own.
        Ok(EventFd(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    /// Wakes the reader.
    pub fn wake(&self) {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a live u64 to our eventfd. A failure
        // (counter saturated) still leaves the reader woken.
        let _ = unsafe { libc::write(self.0.as_raw_fd(), (&one as *const u64).cast(), 8) };
    }

    /// Clears pending wake-ups.
    pub fn drain(&self) {
        let mut v: u64 = 0;
        // SAFETY: reads 8 bytes into a live u64 from our non-blocking eventfd.
        let _ = unsafe { libc::read(self.0.as_raw_fd(), (&mut v as *mut u64).cast(), 8) };
    }

    /// The descriptor.
    pub fn raw(&self) -> RawFd {
        self.0.as_raw_fd()
    }
}

/// Pins the calling thread to one CPU.
pub fn pin_to_cpu(cpu: usize) -> io::Result<()> {
    // SAFETY: cpu_set_t is plain data; zeroed is its empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    if cpu >= libc::CPU_SETSIZE as usize {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "CPU index too large",
        ));
    }
    // SAFETY: cpu < CPU_SETSIZE, checked above.
    unsafe { libc::CPU_SET(cpu, &mut set) };
    // SAFETY: pid 0 = this thread; a pointer to a live set and its size.
    let rc = unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Raises RLIMIT_NOFILE to at least `want` if it can (soft up to hard, and the
/// hard limit too when privileged). Returns the soft limit now in force.
pub fn raise_nofile(want: u64) -> io::Result<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: a pointer to a live rlimit.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(io::Error::last_os_error());
    }
    if lim.rlim_cur >= want {
        return Ok(lim.rlim_cur);
    }
    let wanted = libc::rlimit {
        rlim_cur: want,
        rlim_max: lim.rlim_max.max(want),
    };
    // SAFETY: a pointer to a live rlimit.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &wanted) } == 0 {
        return Ok(want);
    }
    let capped = libc::rlimit {
        rlim_cur: lim.rlim_max.min(want),
        rlim_max: lim.rlim_max,
    };
    // SAFETY: as above.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &capped) } == 0 {
        return Ok(capped.rlim_cur);
    }
    Err(io::Error::last_os_error())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sockaddr_round_trips() {
        for a in ["127.0.0.1:5004", "[::1]:40000", "[fe80::1%2]:9"] {
            let a: SocketAddr = a.parse().unwrap();
            let mut b = [0u8; SOCKADDR_LEN];
            let n = encode_sockaddr(a, &mut b);
            assert_eq!(decode_sockaddr(&b[..n]), Some(a));
        }
        assert_eq!(decode_sockaddr(&[1, 2]), None);
    }
}
