//! Fault injection for the integration tests: a TCP proxy on 127.0.0.1 in front of
//! PostgreSQL or any fake API, controlled at runtime from the test.
//!
//! What it can do to the traffic, per connection (numbered from 1 in accept order) or to
//! every connection:
//! - add latency to every chunk forwarded ([`Proxy::latency`]);
//! - after N bytes in one direction, or once the client has sent a byte pattern, cut the
//!   connection: reset it (RST, as a crashed peer or a middlebox), close it (FIN), or stall
//!   it (hold every byte, keep the socket open: a black hole) ([`Rule`]);
//! - stall or reset every live connection now ([`Proxy::stall_all`], [`Proxy::reset_all`]);
//! - refuse new connections (the listener is closed: ECONNREFUSED, as a Neon compute
//!   waking up) and accept them again on the same port ([`Proxy::down`], [`Proxy::up`]).
//!
//! Everything it did is counted ([`Proxy::connections`], [`Proxy::fired`]) so tests can
//! assert that a fault really happened.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;

/// Which bytes a rule counts or watches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dir {
    /// Client → server.
    Up,
    /// Server → client.
    Down,
}

/// What happens to a connection when its rule fires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cut {
    /// RST to both sides (SO_LINGER 0).
    Reset,
    /// FIN to both sides.
    Close,
    /// Nothing more is forwarded either way; the sockets stay open.
    Stall,
}

/// When a rule fires.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trigger {
    /// Once this many bytes went through in `dir` (the chunk is split exactly there).
    Bytes(Dir, u64),
    /// Once a chunk containing this pattern went through in `dir` (the chunk is forwarded).
    Pattern(Dir, Vec<u8>),
}

/// A fault for one connection (`conn: Some(n)`, the n-th accepted, from 1) or for every
/// connection accepted while it is installed (`conn: None`). `hold`: after firing, stall
/// both directions for this long before `cut` (a request that reached the server whose
/// answer never comes back: with `Pattern(Up, b"COMMIT")`, a commit of unknown outcome).
#[derive(Debug, Clone)]
pub struct Rule {
    pub conn: Option<u32>,
    pub trigger: Trigger,
    pub cut: Cut,
    pub hold: Duration,
    /// Fire at most this many times in all (None: every matching connection).
    pub times: Option<u32>,
}

impl Rule {
    pub fn bytes(dir: Dir, n: u64, cut: Cut) -> Rule {
        Rule {
            conn: None,
            trigger: Trigger::Bytes(dir, n),
            cut,
            hold: Duration::ZERO,
            times: Some(1),
        }
    }

    pub fn pattern(dir: Dir, pattern: &[u8], cut: Cut) -> Rule {
        Rule {
            conn: None,
            trigger: Trigger::Pattern(dir, pattern.to_vec()),
            cut,
            hold: Duration::ZERO,
            times: Some(1),
        }
    }

    /// Only the n-th connection (from 1).
    pub fn on_conn(mut self, n: u32) -> Rule {
        self.conn = Some(n);
        self
    }

    pub fn hold(mut self, d: Duration) -> Rule {
        self.hold = d;
        self
    }

    pub fn times(mut self, n: Option<u32>) -> Rule {
        self.times = n;
        self
    }
}

#[derive(Default)]
struct Ctl {
    latency: Duration,
    rules: Vec<Rule>,
    accepted: u32,
    fired: Vec<(u32, String)>,
    stall_all: bool,
    down: bool,
    /// Live connections: number → its kill switch.
    live: Vec<(u32, Arc<Conn>)>,
}

struct Conn {
    /// Set when the connection must stop forwarding.
    stalled: Mutex<bool>,
    /// Set when it must end, and how.
    end: Mutex<Option<Cut>>,
    wake: Notify,
}

/// The proxy. Dropping it stops accepting and resets every live connection.
pub struct Proxy {
    pub addr: SocketAddr,
    ctl: Arc<Mutex<Ctl>>,
    up_again: Arc<Notify>,
    shutdown: Arc<Notify>,
}

impl Proxy {
    /// A proxy on 127.0.0.1 (a free port) forwarding to `target` (`host:port`).
    pub fn start(target: &str) -> Proxy {
        let target = target.to_string();
        let ctl = Arc::new(Mutex::new(Ctl::default()));
        let up_again = Arc::new(Notify::new());
        let shutdown = Arc::new(Notify::new());
        let (tx, rx) = std::sync::mpsc::channel();
        let (c, u, s) = (ctl.clone(), up_again.clone(), shutdown.clone());
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(serve(target, c, u, s, tx));
        });
        let addr = rx.recv().expect("the proxy listens");
        Proxy {
            addr,
            ctl,
            up_again,
            shutdown,
        }
    }

    /// In front of the PostgreSQL of `url`: returns the proxy and the same URL through it.
    pub fn postgres(url: &str) -> (Proxy, String) {
        let mut u = url::Url::parse(url).unwrap();
        let target = format!(
            "{}:{}",
            u.host_str().unwrap_or("127.0.0.1"),
            u.port().unwrap_or(5432)
        );
        let p = Proxy::start(&target);
        u.set_host(Some("127.0.0.1")).unwrap();
        u.set_port(Some(p.addr.port())).unwrap();
        (p, u.to_string())
    }

    /// In front of an HTTP base URL (`http://127.0.0.1:PORT`): the proxy and its base URL.
    pub fn http(base: &str) -> (Proxy, String) {
        let u = url::Url::parse(base).unwrap();
        let p = Proxy::start(&format!(
            "{}:{}",
            u.host_str().unwrap(),
            u.port_or_known_default().unwrap()
        ));
        let url = format!("http://{}", p.addr);
        (p, url)
    }

    fn with<T>(&self, f: impl FnOnce(&mut Ctl) -> T) -> T {
        f(&mut self.ctl.lock().unwrap())
    }

    /// Delay added before forwarding each chunk, both ways.
    pub fn latency(&self, d: Duration) -> &Proxy {
        self.with(|c| c.latency = d);
        self
    }

    pub fn rule(&self, r: Rule) -> &Proxy {
        self.with(|c| c.rules.push(r));
        self
    }

    pub fn clear_rules(&self) -> &Proxy {
        self.with(|c| c.rules.clear());
        self
    }

    /// Stops (or resumes) forwarding on every connection, live and new.
    pub fn stall_all(&self, on: bool) -> &Proxy {
        let live = self.with(|c| {
            c.stall_all = on;
            c.live.clone()
        });
        for (_, conn) in live {
            *conn.stalled.lock().unwrap() = on;
            conn.wake.notify_one();
        }
        self
    }

    /// Resets every live connection now.
    pub fn reset_all(&self) -> &Proxy {
        let live = self.with(|c| c.live.clone());
        for (n, conn) in live {
            *conn.end.lock().unwrap() = Some(Cut::Reset);
            conn.wake.notify_one();
            self.with(|c| c.fired.push((n, "reset_all".into())));
        }
        self
    }

    /// Closes the listener: new connections are refused until [`Proxy::up`].
    pub fn down(&self) -> &Proxy {
        self.with(|c| c.down = true);
        // The accept loop notices within its poll interval.
        std::thread::sleep(Duration::from_millis(150));
        self
    }

    /// Listens again on the same port.
    pub fn up(&self) -> &Proxy {
        self.with(|c| c.down = false);
        self.up_again.notify_waiters();
        self
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> u32 {
        self.with(|c| c.accepted)
    }

    /// Faults that fired: (connection number, what).
    pub fn fired(&self) -> Vec<(u32, String)> {
        self.with(|c| c.fired.clone())
    }

    /// Connections still open.
    pub fn live(&self) -> usize {
        self.with(|c| c.live.len())
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.reset_all();
        self.shutdown.notify_waiters();
        self.shutdown.notify_one();
    }
}

async fn serve(
    target: String,
    ctl: Arc<Mutex<Ctl>>,
    up_again: Arc<Notify>,
    shutdown: Arc<Notify>,
    ready: std::sync::mpsc::Sender<SocketAddr>,
) {
    let mut listener = Some(TcpListener::bind("127.0.0.1:0").await.unwrap());
    let addr = listener.as_ref().unwrap().local_addr().unwrap();
    ready.send(addr).unwrap();
    loop {
        if ctl.lock().unwrap().down {
            listener = None;
            tokio::select! {
                _ = up_again.notified() => {}
                _ = tokio::time::sleep(Duration::from_millis(50)) => {}
                _ = shutdown.notified() => return,
            }
            continue;
        }
        let l = match &listener {
            Some(l) => l,
            None => match TcpListener::bind(addr).await {
                Ok(l) => listener.insert(l),
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            },
        };
        let accepted = tokio::select! {
            a = l.accept() => a,
            _ = tokio::time::sleep(Duration::from_millis(50)) => continue,
            _ = shutdown.notified() => return,
        };
        let Ok((client, _)) = accepted else { continue };
        let (n, rules, conn) = {
            let mut c = ctl.lock().unwrap();
            c.accepted += 1;
            let n = c.accepted;
            let rules: Vec<Rule> = c
                .rules
                .iter()
                .filter(|r| r.conn.is_none_or(|k| k == n))
                .cloned()
                .collect();
            let conn = Arc::new(Conn {
                stalled: Mutex::new(c.stall_all),
                end: Mutex::new(None),
                wake: Notify::new(),
            });
            c.live.push((n, conn.clone()));
            (n, rules, conn)
        };
        let (ctl2, target2) = (ctl.clone(), target.clone());
        tokio::spawn(async move {
            if let Ok(server) = TcpStream::connect(&target2).await {
                relay(n, client, server, rules, conn, ctl2.clone()).await;
            } else {
                let _ = client.set_zero_linger();
            }
            ctl2.lock().unwrap().live.retain(|(k, _)| *k != n);
        });
    }
}

/// Whether rule `i` may still fire, counting it as fired if so.
fn take(ctl: &Mutex<Ctl>, n: u32, rule: &Rule) -> bool {
    let mut c = ctl.lock().unwrap();
    let Some(pos) = c
        .rules
        .iter()
        .position(|r| r.conn == rule.conn && r.trigger == rule.trigger && r.cut == rule.cut)
    else {
        return false;
    };
    if let Some(t) = c.rules[pos].times {
        if t == 0 {
            return false;
        }
        c.rules[pos].times = Some(t - 1);
    }
    c.fired
        .push((n, format!("{:?} → {:?}", rule.trigger, rule.cut)));
    true
}

async fn relay(
    n: u32,
    client: TcpStream,
    server: TcpStream,
    rules: Vec<Rule>,
    conn: Arc<Conn>,
    ctl: Arc<Mutex<Ctl>>,
) {
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (mut cr, mut cw) = client.into_split();
    let (mut sr, mut sw) = server.into_split();
    let mut counted = [0u64; 2];
    let mut buf_up = vec![0u8; 16 * 1024];
    let mut buf_down = vec![0u8; 16 * 1024];
    let mut up_open = true;
    let mut down_open = true;
    let outcome: Cut = loop {
        if let Some(cut) = *conn.end.lock().unwrap() {
            break cut;
        }
        if !up_open && !down_open {
            break Cut::Close;
        }
        if *conn.stalled.lock().unwrap() {
            conn.wake.notified().await;
            continue;
        }
        // Read from whichever side has data.
        let (dir, data) = tokio::select! {
            r = cr.read(&mut buf_up), if up_open => match r {
                Ok(0) | Err(_) => { up_open = false; let _ = sw.shutdown().await; continue; }
                Ok(k) => (Dir::Up, buf_up[..k].to_vec()),
            },
            r = sr.read(&mut buf_down), if down_open => match r {
                Ok(0) | Err(_) => { down_open = false; let _ = cw.shutdown().await; continue; }
                Ok(k) => (Dir::Down, buf_down[..k].to_vec()),
            },
            _ = conn.wake.notified() => continue,
        };
        let latency = ctl.lock().unwrap().latency;
        if !latency.is_zero() {
            tokio::time::sleep(latency).await;
        }
        let idx = if dir == Dir::Up { 0 } else { 1 };
        // The first rule this chunk triggers, and how much of the chunk goes through first.
        let mut fire: Option<(&Rule, usize)> = None;
        for r in &rules {
            let hit = match &r.trigger {
                Trigger::Bytes(d, limit)
                    if *d == dir && counted[idx] + data.len() as u64 >= *limit =>
                {
                    Some(limit.saturating_sub(counted[idx]) as usize)
                }
                Trigger::Pattern(d, p)
                    if *d == dir && data.windows(p.len().max(1)).any(|w| w == &p[..]) =>
                {
                    Some(data.len())
                }
                _ => None,
            };
            if let Some(k) = hit
                && take(&ctl, n, r)
            {
                fire = Some((r, k));
                break;
            }
        }
        let pass = fire.map_or(data.len(), |(_, k)| k.min(data.len()));
        let w = if dir == Dir::Up { &mut sw } else { &mut cw };
        if pass > 0 && w.write_all(&data[..pass]).await.is_err() {
            break Cut::Close;
        }
        counted[idx] += pass as u64;
        if let Some((r, _)) = fire {
            if !r.hold.is_zero() {
                tokio::time::sleep(r.hold).await;
            }
            if r.cut == Cut::Stall {
                *conn.stalled.lock().unwrap() = true;
                continue;
            }
            break r.cut;
        }
    };
    // Reassemble the halves to end the sockets the chosen way.
    if let (Ok(client), Ok(server)) = (cr.reunite(cw), sr.reunite(sw)) {
        if outcome == Cut::Reset {
            let _ = client.set_zero_linger();
            let _ = server.set_zero_linger();
        }
        drop(client);
        drop(server);
    }
}
