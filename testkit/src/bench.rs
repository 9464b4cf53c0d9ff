//! What the benchmarks measure with: percentiles, a process's CPU time and memory from /proc
//! (Linux only), and free loopback ports.

use std::net::SocketAddr;

/// The `p` quantile (0 to 1) of `sorted` by nearest rank: the smallest sample at or above that
/// share of them; the default (zero) when there is none.
pub fn percentile<T: Copy + Default>(sorted: &[T], p: f64) -> T {
    if sorted.is_empty() {
        return T::default();
    }
    let rank = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// User plus system CPU seconds of a process, from /proc/PID/stat (in USER_HZ, 100 per second
/// on Linux whatever the kernel's tick); `None` when it cannot be read.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces; the fields after its closing parenthesis do not.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / 100.0)
}

/// A memory field (`VmRSS:`, `VmHWM:`) of /proc/`process`/status (`process` a pid or `self`),
/// in KiB; `None` when it cannot be read.
pub fn memory_kib(process: &str, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{process}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

/// [`memory_kib`] in MiB, 0 when it cannot be read.
pub fn memory_mib(process: &str, field: &str) -> f64 {
    memory_kib(process, field).map_or(0.0, |kib| kib as f64 / 1024.0)
}

/// A loopback address no one listens on now.
pub fn free_port() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap()
}
