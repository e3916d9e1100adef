//! A TCP proxy on loopback in front of one server that can cut every connection through it with a
//! reset (RST, `SO_LINGER` 0), the way a node that dies or a middlebox that drops its state does,
//! while calls are in flight. Clients connect to [`ResetProxy::addr`]; bytes are forwarded as they
//! are, so it speaks whatever the server speaks.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

#[derive(Debug, Default)]
struct Conns {
    next: u64,
    live: Vec<(u64, JoinHandle<()>)>,
}

/// The proxy. Dropping it closes the listener and every connection.
#[derive(Debug)]
pub struct ResetProxy {
    addr: SocketAddr,
    conns: Arc<Mutex<Conns>>,
    accepted: Arc<AtomicU64>,
    accept: JoinHandle<()>,
}

impl Drop for ResetProxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.reset_all();
    }
}

fn lock(m: &Mutex<Conns>) -> MutexGuard<'_, Conns> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl ResetProxy {
    /// Listens on a free loopback port and forwards each connection to `target`.
    pub async fn start(target: SocketAddr) -> std::io::Result<Self> {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
        let addr = listener.local_addr()?;
        let conns: Arc<Mutex<Conns>> = Arc::default();
        let accepted = Arc::new(AtomicU64::new(0));
        let (c, n) = (conns.clone(), accepted.clone());
        let accept = tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                n.fetch_add(1, Ordering::Relaxed);
                let Ok(outbound) = TcpStream::connect(target).await else {
                    let _ = inbound.set_zero_linger();
                    continue;
                };
                // Both sides close with a reset whenever the connection ends here: the point of
                // this proxy is to cut connections abruptly.
                let _ = inbound.set_zero_linger();
                let _ = outbound.set_zero_linger();
                let _ = inbound.set_nodelay(true);
                let _ = outbound.set_nodelay(true);
                let mut conns = lock(&c);
                let id = conns.next;
                conns.next += 1;
                let me = c.clone();
                let task = tokio::spawn(async move {
                    let (mut a, mut b) = (inbound, outbound);
                    let _ = tokio::io::copy_bidirectional(&mut a, &mut b).await;
                    lock(&me).live.retain(|(i, _)| *i != id);
                });
                conns.live.push((id, task));
            }
        });
        Ok(ResetProxy { addr, conns, accepted, accept })
    }

    /// Where clients connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Connections open through the proxy now.
    pub fn connections(&self) -> usize {
        lock(&self.conns).live.len()
    }

    /// Connections accepted since start.
    pub fn accepted(&self) -> u64 {
        self.accepted.load(Ordering::Relaxed)
    }

    /// Resets every open connection (both sides get an RST); returns how many there were. New
    /// connections are still accepted.
    pub fn reset_all(&self) -> usize {
        let live = std::mem::take(&mut lock(&self.conns).live);
        let n = live.len();
        for (_, task) in live {
            task.abort();
        }
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn forwards_and_resets() {
        let server = TcpListener::bind(("127.0.0.1", 0)).await.expect("bind");
        let target = server.local_addr().expect("addr");
        tokio::spawn(async move {
            while let Ok((mut s, _)) = server.accept().await {
                tokio::spawn(async move {
                    let mut buf = [0u8; 5];
                    if s.read_exact(&mut buf).await.is_ok() {
                        let _ = s.write_all(&buf).await;
                        let _ = s.read(&mut buf).await; // wait
                    }
                });
            }
        });
        let proxy = ResetProxy::start(target).await.expect("proxy");
        let mut c = TcpStream::connect(proxy.addr()).await.expect("connect");
        c.write_all(b"hello").await.expect("write");
        let mut buf = [0u8; 5];
        c.read_exact(&mut buf).await.expect("echo");
        assert_eq!(&buf, b"hello");
        assert_eq!(proxy.reset_all(), 1);
        let err = c.read(&mut buf).await;
        assert!(
            matches!(&err, Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset),
            "an RST, not a FIN: {err:?}"
        );
        assert_eq!(proxy.accepted(), 1);
    }
}
