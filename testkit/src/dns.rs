//! An authoritative DNS server on a loopback port, speaking the DNS wire format over UDP and TCP,
//! that answers the way CoreDNS's kubernetes plugin does (see `shared/k8s-wire/coredns-answers.txt`):
//! headless Services as one A/AAAA record per ready pod, SRV `_<port>._tcp.<svc>` records whose
//! targets are `<ip-with-dashes>.<svc>` with their A records in the additional section, NXDOMAIN with
//! the zone's SOA for unknown names, NOERROR with the SOA (no answers) for a known name without the
//! asked type. It can be told to answer SERVFAIL or to stay silent (a timeout).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use hickory_proto::op::{Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA, CNAME, SOA, SRV};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, UdpSocket};
use tokio::task::JoinHandle;

/// How the server answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Behaviour {
    /// From its records.
    Normal,
    /// SERVFAIL to everything.
    ServFail,
    /// No answer at all (clients time out).
    Silent,
}

#[derive(Debug)]
struct Zone {
    records: HashMap<(String, RecordType), Vec<Record>>,
    behaviour: Behaviour,
    /// Behaviour for one record type only (e.g. AAAA SERVFAIL while A answers).
    by_type: HashMap<RecordType, Behaviour>,
    /// Behaviour for one name only (e.g. one SRV target's address look-up timing out); such a name
    /// is also left out of SRV answers' additional section, so clients must ask for it.
    by_name: HashMap<String, Behaviour>,
    negative_ttl: u32,
    domain: String,
}

fn key(name: &str) -> String {
    let mut n = name.to_ascii_lowercase();
    if !n.ends_with('.') {
        n.push('.');
    }
    n
}

fn name(n: &str) -> Name {
    Name::from_ascii(key(n)).expect("test names are valid")
}

/// The server. Dropping it stops it.
#[derive(Debug)]
pub struct FakeDns {
    addr: SocketAddr,
    zone: Arc<Mutex<Zone>>,
    queries: Arc<AtomicU64>,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for FakeDns {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl FakeDns {
    /// Starts on `127.0.0.1:<free port>` (UDP and TCP on the same port), authoritative for `domain`.
    pub async fn start(domain: &str) -> std::io::Result<Self> {
        // Find a port free for both protocols.
        let mut attempt = 0;
        loop {
            let udp = UdpSocket::bind("127.0.0.1:0").await?;
            match TcpListener::bind(udp.local_addr()?).await {
                Ok(tcp) => return Self::serve(udp, tcp, domain),
                Err(e) if attempt > 20 => return Err(e),
                Err(_) => attempt += 1,
            }
        }
    }

    /// Starts on `addr` (UDP and TCP), authoritative for `domain`.
    pub async fn start_on(addr: SocketAddr, domain: &str) -> std::io::Result<Self> {
        let udp = UdpSocket::bind(addr).await?;
        let tcp = TcpListener::bind(udp.local_addr()?).await?;
        Self::serve(udp, tcp, domain)
    }

    fn serve(udp: UdpSocket, tcp: TcpListener, domain: &str) -> std::io::Result<Self> {
        let addr = udp.local_addr()?;
        let zone = Arc::new(Mutex::new(Zone {
            records: HashMap::new(),
            behaviour: Behaviour::Normal,
            by_type: HashMap::new(),
            by_name: HashMap::new(),
            negative_ttl: 5,
            domain: key(domain),
        }));
        let queries = Arc::new(AtomicU64::new(0));
        let udp = Arc::new(udp);
        let (z, q) = (zone.clone(), queries.clone());
        let udp_task = tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            loop {
                let Ok((n, peer)) = udp.recv_from(&mut buf).await else { continue };
                q.fetch_add(1, Ordering::Relaxed);
                if let Some(resp) = answer(&z, &buf[..n], true) {
                    let _ = udp.send_to(&resp, peer).await;
                }
            }
        });
        let (z, q) = (zone.clone(), queries.clone());
        let tcp_task = tokio::spawn(async move {
            loop {
                let Ok((mut stream, _)) = tcp.accept().await else { continue };
                let (z, q) = (z.clone(), q.clone());
                tokio::spawn(async move {
                    loop {
                        let mut len = [0u8; 2];
                        if stream.read_exact(&mut len).await.is_err() {
                            return;
                        }
                        let mut buf = vec![0u8; usize::from(u16::from_be_bytes(len))];
                        if stream.read_exact(&mut buf).await.is_err() {
                            return;
                        }
                        q.fetch_add(1, Ordering::Relaxed);
                        let Some(resp) = answer(&z, &buf, false) else { continue };
                        let Ok(len) = u16::try_from(resp.len()) else { return };
                        if stream.write_all(&len.to_be_bytes()).await.is_err() || stream.write_all(&resp).await.is_err()
                        {
                            return;
                        }
                    }
                });
            }
        });
        Ok(FakeDns { addr, zone, queries, tasks: vec![udp_task, tcp_task] })
    }

    /// Where it listens (UDP and TCP).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Queries answered or ignored so far.
    pub fn queries(&self) -> u64 {
        self.queries.load(Ordering::Relaxed)
    }

    /// Changes how it answers.
    pub fn set_behaviour(&self, b: Behaviour) {
        self.lock().behaviour = b;
    }

    /// Changes how it answers queries of one record type (`Normal` restores the default).
    pub fn set_type_behaviour(&self, t: RecordType, b: Behaviour) {
        let mut z = self.lock();
        if b == Behaviour::Normal {
            z.by_type.remove(&t);
        } else {
            z.by_type.insert(t, b);
        }
    }

    /// Changes how it answers queries for one name (`Normal` restores the default). An SRV answer
    /// then carries no additional records for that name (clients must look it up, and that fails).
    pub fn set_name_behaviour(&self, name_: &str, b: Behaviour) {
        let mut z = self.lock();
        if b == Behaviour::Normal {
            z.by_name.remove(&key(name_));
        } else {
            z.by_name.insert(key(name_), b);
        }
    }

    /// Replaces the SRV records of `name` with `(priority, weight, port, target)` entries.
    pub fn set_srv_records(&self, name_: &str, records: &[(u16, u16, u16, &str)], ttl: u32) {
        let n = name(name_);
        let recs = records
            .iter()
            .map(|(priority, weight, port, t)| {
                Record::from_rdata(n.clone(), ttl, RData::SRV(SRV::new(*priority, *weight, *port, name(t))))
            })
            .collect();
        self.lock().records.insert((key(name_), RecordType::SRV), recs);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Zone> {
        self.zone.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Replaces the A and AAAA records of `name`.
    pub fn set_addresses(&self, name_: &str, ips: &[IpAddr], ttl: u32) {
        let n = name(name_);
        let (v4, v6): (Vec<_>, Vec<_>) = ips.iter().partition(|ip| ip.is_ipv4());
        let mut z = self.lock();
        let to_records = |ips: Vec<&IpAddr>| -> Vec<Record> {
            ips.into_iter()
                .map(|ip| match ip {
                    IpAddr::V4(v4) => Record::from_rdata(n.clone(), ttl, RData::A(A(*v4))),
                    IpAddr::V6(v6) => Record::from_rdata(n.clone(), ttl, RData::AAAA(AAAA(*v6))),
                })
                .collect()
        };
        z.records.insert((key(name_), RecordType::A), to_records(v4));
        z.records.insert((key(name_), RecordType::AAAA), to_records(v6));
    }

    /// Replaces the SRV records of `name` with `(target, port)` pairs.
    pub fn set_srv(&self, name_: &str, targets: &[(&str, u16)], ttl: u32) {
        let n = name(name_);
        let recs = targets
            .iter()
            .map(|(t, port)| {
                let weight = u16::try_from(100 / targets.len().max(1)).unwrap_or(0);
                Record::from_rdata(n.clone(), ttl, RData::SRV(SRV::new(0, weight, *port, name(t))))
            })
            .collect();
        self.lock().records.insert((key(name_), RecordType::SRV), recs);
    }

    /// Makes `name` an alias of `target` (CNAME); queries for `name` answer the chain, then the
    /// target's records, as a recursive resolver in front of the zone would.
    pub fn set_cname(&self, name_: &str, target: &str, ttl: u32) {
        let rec = Record::from_rdata(name(name_), ttl, RData::CNAME(CNAME(name(target))));
        self.lock().records.insert((key(name_), RecordType::CNAME), vec![rec]);
    }

    /// Removes every record of `name`: it answers NXDOMAIN.
    pub fn remove(&self, name_: &str) {
        let k = key(name_);
        self.lock().records.retain(|(n, _), _| *n != k);
    }

    /// Serves a headless Service as CoreDNS does: one A/AAAA per (ready) pod IP, and when
    /// `port_name` is given, SRV records `_<port_name>._tcp.<svc>` → `<ip-dashed>.<svc>` with A records.
    pub fn set_headless_service(&self, fqdn: &str, port_name: Option<&str>, port: u16, ips: &[IpAddr], ttl: u32) {
        self.set_addresses(fqdn, ips, ttl);
        let fqdn = key(fqdn);
        if let Some(p) = port_name {
            let targets: Vec<(String, IpAddr)> =
                ips.iter().map(|ip| (format!("{}.{fqdn}", ip.to_string().replace(['.', ':'], "-")), *ip)).collect();
            for (t, ip) in &targets {
                self.set_addresses(t, &[*ip], ttl);
            }
            let pairs: Vec<(&str, u16)> = targets.iter().map(|(t, _)| (t.as_str(), port)).collect();
            self.set_srv(&format!("_{p}._tcp.{fqdn}"), &pairs, ttl);
        }
    }

    /// Serves a ClusterIP Service as CoreDNS does: one A (the VIP), SRV pointing at the Service name.
    pub fn set_cluster_ip_service(&self, fqdn: &str, port_name: &str, port: u16, vip: IpAddr, ttl: u32) {
        self.set_addresses(fqdn, &[vip], ttl);
        self.set_srv(&format!("_{port_name}._tcp.{}", key(fqdn)), &[(fqdn, port)], ttl);
    }
}

/// The answer to one query; over UDP, an answer larger than the client's payload size (EDNS, else
/// 512 bytes) is truncated with the TC bit set, so the client asks again over TCP.
fn answer(zone: &Mutex<Zone>, packet: &[u8], udp: bool) -> Option<Vec<u8>> {
    let request = Message::from_vec(packet).ok()?;
    let bytes = build(zone, &request)?;
    if udp && bytes.len() > usize::from(request.max_payload().max(512)) {
        let mut short = Message::from_vec(&bytes).ok()?.truncate();
        short.metadata.truncation = true;
        return short.to_vec().ok();
    }
    Some(bytes)
}

fn build(zone: &Mutex<Zone>, request: &Message) -> Option<Vec<u8>> {
    let z = zone.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let id = request.metadata.id;
    let mut resp = Message::new(id, MessageType::Response, OpCode::Query);
    resp.metadata.authoritative = true;
    resp.metadata.recursion_desired = request.metadata.recursion_desired;
    resp.add_queries(request.queries.clone());
    let behaviour = request
        .queries
        .first()
        .and_then(|q| z.by_name.get(&key(&q.name.to_ascii())).or_else(|| z.by_type.get(&q.query_type)))
        .copied()
        .unwrap_or(z.behaviour);
    match behaviour {
        Behaviour::Silent => return None,
        Behaviour::ServFail => {
            resp.metadata.response_code = ResponseCode::ServFail;
            return resp.to_vec().ok();
        }
        Behaviour::Normal => {}
    }
    let q = request.queries.first()?;
    let mut qname = key(&q.name.to_ascii());
    // Follow a CNAME chain (at most 8 links), each link in the answer.
    for _ in 0..8 {
        if q.query_type == RecordType::CNAME || z.records.contains_key(&(qname.clone(), q.query_type)) {
            break;
        }
        let Some(link) = z.records.get(&(qname.clone(), RecordType::CNAME)).and_then(|r| r.first()) else { break };
        let RData::CNAME(target) = &link.data else { break };
        resp.add_answer(link.clone());
        qname = key(&target.0.to_ascii());
    }
    let exists = z.records.iter().any(|((n, _), recs)| *n == qname && !recs.is_empty());
    let found = z.records.get(&(qname.clone(), q.query_type)).filter(|r| !r.is_empty());
    match found {
        Some(recs) => {
            resp.add_answers(recs.iter().cloned());
            if q.query_type == RecordType::SRV {
                for r in recs {
                    if let RData::SRV(srv) = &r.data {
                        let t = key(&srv.target.to_ascii());
                        if z.by_name.contains_key(&t) {
                            continue;
                        }
                        for rt in [RecordType::A, RecordType::AAAA] {
                            if let Some(extra) = z.records.get(&(t.clone(), rt)) {
                                resp.add_additionals(extra.iter().cloned());
                            }
                        }
                    }
                }
            }
        }
        None => {
            if !exists {
                resp.metadata.response_code = ResponseCode::NXDomain;
            }
            let soa = SOA::new(
                name(&format!("ns.dns.{}", z.domain)),
                name(&format!("hostmaster.{}", z.domain)),
                1,
                7200,
                1800,
                86400,
                z.negative_ttl,
            );
            resp.add_authority(Record::from_rdata(name(&z.domain), z.negative_ttl, RData::SOA(soa)));
        }
    }
    resp.to_vec().ok()
}
