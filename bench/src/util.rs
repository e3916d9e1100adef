//! Small measuring tools: percentiles, process memory and CPU time from /proc, helper processes
//! pinned to their own cores, free ports.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Percentiles of a sample, in the sample's unit.
#[derive(Clone, Copy, Debug, Default)]
pub struct Summary {
    pub n: usize,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
}

impl Summary {
    /// Nearest-rank percentiles of `values` (any order); all zero for an empty sample.
    pub fn of(values: &[f64]) -> Summary {
        if values.is_empty() {
            return Summary::default();
        }
        let mut v = values.to_vec();
        v.sort_by(f64::total_cmp);
        let at = |p: f64| v[(((v.len() as f64) * p).ceil() as usize).clamp(1, v.len()) - 1];
        Summary { n: v.len(), p50: at(0.50), p90: at(0.90), p99: at(0.99), max: v[v.len() - 1] }
    }
}

/// The median of `values` (0 for none).
pub fn median(values: &[f64]) -> f64 {
    Summary::of(values).p50
}

pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Signed milliseconds from `from` to `to` (negative when `to` came first).
pub fn signed_ms(from: Instant, to: Instant) -> f64 {
    if to >= from { ms(to - from) } else { -ms(from - to) }
}

/// Resident memory of a process in KiB (Linux), `None` elsewhere or when it is gone.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// CPU time (user + system) of a process in milliseconds, from /proc/<pid>/stat (10 ms ticks).
pub fn proc_cpu_ms(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces) start at the state, field 3.
    let rest = stat.rsplit_once(')')?.1;
    let v: Vec<&str> = rest.split_whitespace().collect();
    let (utime, stime): (u64, u64) = (v.get(11)?.parse().ok()?, v.get(12)?.parse().ok()?);
    #[cfg(unix)]
    let hz = rustix::param::clock_ticks_per_second();
    #[cfg(not(unix))]
    let hz = 100u64;
    Some((utime + stime) as f64 * 1e3 / hz as f64)
}

/// The highest resident set this process has had (VmHWM), KiB.
pub fn own_peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

pub fn own_rss_kib() -> Option<u64> {
    rss_kib(std::process::id())
}

/// CPU time this process has used, in nanoseconds, threads that have exited included
/// (`CLOCK_PROCESS_CPUTIME_ID`: nanosecond resolution, unlike the 10 ms ticks of /proc/self/stat).
/// Summing `/proc/self/task/*/schedstat` instead races with threads that exit while it reads (seen
/// in CI) and forgets their time. `None` where there is no such clock.
pub fn own_cpu_ns() -> Option<u64> {
    #[cfg(unix)]
    {
        let t = rustix::time::clock_gettime(rustix::time::ClockId::ProcessCPUTime);
        let secs = u64::try_from(t.tv_sec).ok()?;
        let nanos = u64::try_from(t.tv_nsec).ok()?;
        secs.checked_mul(1_000_000_000)?.checked_add(nanos)
    }
    #[cfg(not(unix))]
    {
        None
    }
}

/// Per-CPU (busy, total) jiffies from /proc/stat (Linux); empty elsewhere.
pub fn cpu_jiffies() -> Vec<(u64, u64)> {
    let Ok(stat) = std::fs::read_to_string("/proc/stat") else { return Vec::new() };
    stat.lines()
        .filter(|l| l.starts_with("cpu") && l.as_bytes().get(3).is_some_and(u8::is_ascii_digit))
        .map(|l| {
            let v: Vec<u64> = l.split_whitespace().skip(1).filter_map(|x| x.parse().ok()).collect();
            let total: u64 = v.iter().take(8).sum();
            let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
            (total - idle, total)
        })
        .collect()
}

/// Busy share of each CPU between two [`cpu_jiffies`] readings.
pub fn cpu_busy(before: &[(u64, u64)], after: &[(u64, u64)]) -> Vec<f64> {
    before
        .iter()
        .zip(after)
        .map(|(b, a)| {
            let total = a.1.saturating_sub(b.1);
            if total == 0 { 0.0 } else { a.0.saturating_sub(b.0) as f64 / total as f64 }
        })
        .collect()
}

/// A port free on loopback now.
pub fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Waits until something accepts TCP connections at `addr`.
pub async fn wait_tcp(addr: SocketAddr, within: Duration) -> Result<(), String> {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Err(format!("nothing listens at {addr} after {within:?}"))
}

/// Where helper processes (API server, providers) run: `taskset -c <cpus>` when set, so they do not
/// take the measuring process's core.
#[derive(Clone, Debug, Default)]
pub struct Placement {
    pub helper_cpus: Option<String>,
}

impl Placement {
    /// A command for `program`, pinned to the helper cores when there are any.
    pub fn command(&self, program: &Path) -> Command {
        match &self.helper_cpus {
            Some(cpus) => {
                let mut c = Command::new("taskset");
                c.arg("-c").arg(cpus).arg(program);
                c
            }
            None => Command::new(program),
        }
    }

    /// Moves a running process (every thread of it) to the helper cores, when there are any.
    pub fn pin(&self, pid: u32) -> Result<(), String> {
        let Some(cpus) = &self.helper_cpus else { return Ok(()) };
        let out = Command::new("taskset")
            .args(["-a", "-p", "-c", cpus, &pid.to_string()])
            .stdout(Stdio::null())
            .output()
            .map_err(|e| format!("taskset: {e}"))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!("taskset -a -p -c {cpus} {pid}: {}", String::from_utf8_lossy(&out.stderr).trim()))
        }
    }

    pub fn describe(&self) -> String {
        match &self.helper_cpus {
            Some(cpus) => format!(
                "measuring process on CPU {}, helper processes (API server, providers) on CPU {cpus}",
                own_cpus().unwrap_or_else(|| "?".into())
            ),
            None => "not pinned (taskset unavailable or fewer than 2 CPUs)".into(),
        }
    }
}

/// This process's allowed CPUs, as the kernel lists them.
pub fn own_cpus() -> Option<String> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status.lines().find_map(|l| l.strip_prefix("Cpus_allowed_list:")).map(|v| v.trim().to_owned())
}

/// A child process killed (and reaped) when dropped.
#[derive(Debug)]
pub struct Helper {
    pub child: Child,
}

impl Helper {
    pub fn spawn(name: &str, mut cmd: Command) -> Result<Helper, String> {
        cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null());
        let child = cmd.spawn().map_err(|e| format!("cannot start {name} ({cmd:?}): {e}"))?;
        Ok(Helper { child })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Helper {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The provider binary as a helper process on loopback (version 1.0.0, logs at warn), started by
/// `cmd` (plain or pinned) with `env` on top; its Triple port once it accepts connections.
pub async fn start_provider(mut cmd: Command, name: &str, env: &[(&str, &str)]) -> Result<(Helper, u16), String> {
    let (port, admin) = (free_port().map_err(|e| e.to_string())?, free_port().map_err(|e| e.to_string())?);
    cmd.env("PROVIDER_LISTEN", format!("127.0.0.1:{port}"))
        .env("PROVIDER_ADMIN_LISTEN", format!("127.0.0.1:{admin}"))
        .env("PROVIDER_INSTANCE", name)
        .env("PROVIDER_VERSION", "1.0.0")
        .env("RUST_LOG", "warn");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let helper = Helper::spawn(name, cmd)?;
    wait_tcp(([127, 0, 0, 1], port).into(), Duration::from_secs(20)).await?;
    Ok((helper, port))
}

/// The commit measured: `git rev-parse HEAD`, with `-dirty` when the tree has changes.
pub fn commit(root: &Path) -> String {
    let out = |args: &[&str]| {
        Command::new("git")
            .args(args)
            .current_dir(root)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
    };
    match out(&["rev-parse", "--short=12", "HEAD"]) {
        Some(head) => {
            let dirty = out(&["status", "--porcelain", "--untracked-files=no"]).is_some_and(|s| !s.is_empty());
            if dirty { format!("{head}-dirty") } else { head }
        }
        None => "unknown (not a git checkout)".into(),
    }
}

/// "2 × Intel(R) Xeon(R) ..." from /proc/cpuinfo.
pub fn machine() -> String {
    // The machine's CPUs, not this process's (it may be pinned to one).
    let cpus = std::fs::read_to_string("/proc/cpuinfo")
        .map(|c| c.lines().filter(|l| l.starts_with("processor")).count())
        .ok()
        .filter(|n| *n > 0)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(0, |n| n.get()));
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|m| m.trim_start_matches([' ', '\t', ':']).to_owned())
        })
        .unwrap_or_else(|| std::env::consts::ARCH.to_owned());
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or_else(String::new, |kib| format!(", {:.0} GiB", kib as f64 / 1024.0 / 1024.0));
    format!("{cpus} × {model}{mem}, {}", std::env::consts::OS)
}

/// The file's size in bytes, if it exists.
pub fn file_size(path: &Path) -> Option<u64> {
    std::fs::metadata(path).ok().map(|m| m.len())
}

pub fn mib(bytes: u64) -> String {
    format!("{:.1} MB", bytes as f64 / 1e6)
}

/// The workspace root (two levels above the binary in target/<profile>/), else the current directory.
pub fn workspace_root(bin_dir: &Path) -> PathBuf {
    bin_dir
        .ancestors()
        .find(|p| p.join("Cargo.lock").is_file())
        .map_or_else(|| std::env::current_dir().unwrap_or_default(), Path::to_path_buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        let s = Summary::of(&v);
        assert_eq!((s.n, s.p50, s.p90, s.p99, s.max), (100, 50.0, 90.0, 99.0, 100.0));
        let one = Summary::of(&[7.0]);
        assert_eq!((one.p50, one.p99), (7.0, 7.0));
        assert_eq!(Summary::of(&[]).n, 0);
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
    }

    #[test]
    fn signed_differences() {
        let a = Instant::now();
        let b = a + Duration::from_millis(3);
        assert!((signed_ms(a, b) - 3.0).abs() < 1e-9);
        assert!((signed_ms(b, a) + 3.0).abs() < 1e-9);
    }

    #[test]
    fn reads_own_process_facts() {
        if cfg!(target_os = "linux") {
            assert!(own_rss_kib().is_some_and(|k| k > 0));
        }
        if cfg!(unix) {
            let a = own_cpu_ns().expect("process CPU clock");
            // Work on a thread that ends before the second reading: its time must still count.
            let worker = std::thread::spawn(|| {
                let mut x = 0u64;
                for i in 0..2_000_000u64 {
                    x = x.wrapping_mul(31).wrapping_add(i);
                }
                std::hint::black_box(x)
            });
            worker.join().expect("worker");
            let b = own_cpu_ns().expect("process CPU clock");
            assert!(b > a, "CPU time of an exited thread counts: {a} -> {b}");
        }
    }
}
