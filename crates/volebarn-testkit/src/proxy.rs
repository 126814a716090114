//! [`FaultProxy`]: a TCP forwarder on `127.0.0.1:0` in front of the server. It counts the
//! bytes each way and breaks connections the way networks do, as the [`Fault`] says.
//!
//! It forwards bytes, not requests: with TLS on it sees only ciphertext, so every fault but
//! [`Fault::FlipFirstBodyByte`] works on byte counts, connection order and conditions the
//! test checks against the server itself.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use volebarn_server::RunningServer;

/// Which way bytes go through the proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Client → server (requests).
    Up,
    /// Server → client (answers).
    Down,
}

/// An async condition, checked by the proxy (see [`Fault::lose_answer`]).
pub type Condition = Arc<dyn Fn() -> Pin<Box<dyn Future<Output = bool> + Send>> + Send + Sync>;

/// What the proxy does to the connections it forwards. Connections are numbered in the
/// order they are accepted, from 0; "the first `n`" are numbers `0..n`.
pub enum Fault {
    /// Forward everything; only count.
    None,
    /// The link dies for good once this many bytes in all went client → server: every
    /// connection is dropped (the read that crossed the line is not delivered) and new ones
    /// are closed as soon as they are accepted.
    DieAfterSent(u64),
    /// Each of the first `first` connections is closed as soon as it is accepted.
    Refuse { first: usize },
    /// Each of the first `first` connections is cut once `after` bytes went `direction` on it
    /// (those bytes are delivered, nothing after them).
    Cut {
        first: usize,
        after: u64,
        direction: Direction,
    },
    /// Connections are cut once `after` bytes went `direction` on them, until `times`
    /// connections have been cut; after that everything flows. Unlike [`Fault::Cut`] it
    /// counts only connections that carried `after` bytes, so connections a client opens
    /// and drops unused (an HTTP client racing a spare connection) do not use up a cut.
    CutTimes {
        times: usize,
        after: u64,
        direction: Direction,
    },
    /// On each of the first `first` connections bytes flow both ways until `landed` holds;
    /// then the connection is dropped before another byte reaches the client: the request
    /// took effect, its answer never arrives. `landed` is checked before each piece of the
    /// server's bytes is passed on, so it should ask the server directly (not through this
    /// proxy) whether the request's effect is there.
    LoseAnswer { first: usize, landed: Condition },
    /// On every connection the first body byte of the first response is flipped. It reads
    /// HTTP/1 framing, so it needs a server with TLS off (TLS would reject the changed record
    /// before any body is read).
    FlipFirstBodyByte,
}

impl Fault {
    /// [`Fault::LoseAnswer`] from an async closure.
    pub fn lose_answer<F, Fut>(first: usize, landed: F) -> Fault
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = bool> + Send + 'static,
    {
        Fault::LoseAnswer {
            first,
            landed: Arc::new(move || Box::pin(landed())),
        }
    }
}

struct Shared {
    upstream: SocketAddr,
    fault: Fault,
    sent: AtomicU64,
    received: AtomicU64,
    connections: AtomicUsize,
    faulted: AtomicUsize,
    /// Connections cut by [`Fault::CutTimes`] so far.
    cuts: AtomicUsize,
    /// Cancelled when the link dies ([`Fault::DieAfterSent`]) or the proxy is dropped; the
    /// generation token is a child of it.
    dead: CancellationToken,
    /// Parent of the tokens of the connections open now: cancelled (and replaced by a fresh
    /// one) to drop them all at once ([`FaultProxy::blip_after`], [`FaultProxy::set_offline`]).
    generation: std::sync::Mutex<CancellationToken>,
    /// Total client → server bytes at which every open connection is dropped, once;
    /// `u64::MAX`: not armed.
    blip_at: AtomicU64,
    /// While set, every connection is closed as soon as it is accepted.
    offline: AtomicBool,
}

impl Shared {
    /// Drops every connection open now; later ones are not affected.
    fn drop_all(&self) {
        let fresh = self.dead.child_token();
        let old = std::mem::replace(&mut *self.generation.lock().expect("generation lock"), fresh);
        old.cancel();
    }
}

/// A running proxy; dropping it drops every connection through it.
pub struct FaultProxy {
    addr: SocketAddr,
    scheme: String,
    shared: Arc<Shared>,
    accept: tokio::task::JoinHandle<()>,
}

impl FaultProxy {
    /// A proxy in front of `server`, speaking its scheme (https when TLS is on).
    pub async fn start(server: &RunningServer, fault: Fault) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("proxy address");
        let scheme = server.url.split("://").next().unwrap_or("https").to_string();
        let dead = CancellationToken::new();
        let shared = Arc::new(Shared {
            upstream: server.addr,
            fault,
            sent: AtomicU64::new(0),
            received: AtomicU64::new(0),
            connections: AtomicUsize::new(0),
            faulted: AtomicUsize::new(0),
            cuts: AtomicUsize::new(0),
            generation: std::sync::Mutex::new(dead.child_token()),
            dead,
            blip_at: AtomicU64::new(u64::MAX),
            offline: AtomicBool::new(false),
        });
        let accepting = shared.clone();
        let accept = tokio::spawn(async move {
            while let Ok((down, _)) = listener.accept().await {
                let index = accepting.connections.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(connection(down, index, accepting.clone()));
            }
        });
        FaultProxy {
            addr,
            scheme,
            shared,
            accept,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The URL a client uses to reach the server through the proxy (`https://127.0.0.1:PORT`;
    /// the server's certificate names 127.0.0.1, so it verifies).
    pub fn url(&self) -> String {
        format!("{}://{}", self.scheme, self.addr)
    }

    /// Bytes that went client → server so far (including those of a cut-off read).
    pub fn sent(&self) -> u64 {
        self.shared.sent.load(Ordering::SeqCst)
    }

    /// [`FaultProxy::sent`], and starts counting from 0 again.
    pub fn take_sent(&self) -> u64 {
        self.shared.sent.swap(0, Ordering::SeqCst)
    }

    /// Bytes that came server → client so far (including those the fault kept back).
    pub fn received(&self) -> u64 {
        self.shared.received.load(Ordering::SeqCst)
    }

    /// A network blip: once `bytes` more have gone client → server, every connection open
    /// then is dropped (the read that crossed the line is not delivered), once; connections
    /// made afterwards flow. Arming it again replaces the previous arming.
    pub fn blip_after(&self, bytes: u64) {
        let at = self.shared.sent.load(Ordering::SeqCst).saturating_add(bytes);
        self.shared.blip_at.store(at, Ordering::SeqCst);
    }

    /// Disarms [`FaultProxy::blip_after`]; returns whether the blip happened.
    pub fn disarm_blip(&self) -> bool {
        self.shared.blip_at.swap(u64::MAX, Ordering::SeqCst) == u64::MAX
    }

    /// Takes the link down (every open connection dropped, new ones closed at once) or
    /// brings it back.
    pub fn set_offline(&self, offline: bool) {
        self.shared.offline.store(offline, Ordering::SeqCst);
        if offline {
            self.shared.drop_all();
        }
    }

    /// Connections accepted so far, refused ones included.
    pub fn connections(&self) -> usize {
        self.shared.connections.load(Ordering::SeqCst)
    }

    /// Connections the fault acted on: refused, cut, answer lost, byte flipped, or ended by
    /// the death of the link.
    pub fn faulted(&self) -> usize {
        self.shared.faulted.load(Ordering::SeqCst)
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.shared.dead.cancel();
    }
}

/// One connection: both directions pumped until both end, or the connection is cut.
async fn connection(down: TcpStream, index: usize, shared: Arc<Shared>) {
    let refused = match shared.fault {
        Fault::Refuse { first } => index < first,
        _ => false,
    };
    if refused || shared.dead.is_cancelled() || shared.offline.load(Ordering::SeqCst) {
        shared.faulted.fetch_add(1, Ordering::SeqCst);
        return; // dropping `down` closes it
    }
    let Ok(up) = TcpStream::connect(shared.upstream).await else {
        return;
    };
    let _ = (down.set_nodelay(true), up.set_nodelay(true));
    let conn = Conn {
        index,
        cut: shared.generation.lock().expect("generation lock").child_token(),
        faulted: AtomicBool::new(false),
        shared: shared.clone(),
    };
    let (down_r, down_w) = down.into_split();
    let (up_r, up_w) = up.into_split();
    tokio::join!(
        pump(down_r, up_w, Direction::Up, &conn),
        pump(up_r, down_w, Direction::Down, &conn)
    );
    if conn.faulted.load(Ordering::SeqCst) || shared.dead.is_cancelled() {
        shared.faulted.fetch_add(1, Ordering::SeqCst);
    }
}

struct Conn {
    index: usize,
    /// Cancelled to drop both directions of this connection.
    cut: CancellationToken,
    faulted: AtomicBool,
    shared: Arc<Shared>,
}

impl Conn {
    /// The fault breaks this connection.
    fn break_off(&self) {
        self.faulted.store(true, Ordering::SeqCst);
        self.cut.cancel();
    }
}

/// Copies `from` → `to` applying the fault, until end of stream (passed on as a half-close),
/// an error (which ends the whole connection) or the connection being cut.
async fn pump(mut from: OwnedReadHalf, mut to: OwnedWriteHalf, dir: Direction, conn: &Conn) {
    let shared = &conn.shared;
    let mut buf = vec![0u8; 64 * 1024];
    let mut passed = 0u64;
    let mut flip = Flip::default();
    loop {
        let n = tokio::select! {
            r = from.read(&mut buf) => match r {
                Ok(0) => {
                    let _ = to.shutdown().await;
                    return;
                }
                Ok(n) => n,
                Err(_) => {
                    conn.cut.cancel();
                    return;
                }
            },
            _ = conn.cut.cancelled() => return,
        };
        let total = match dir {
            Direction::Up => shared.sent.fetch_add(n as u64, Ordering::SeqCst) + n as u64,
            Direction::Down => shared.received.fetch_add(n as u64, Ordering::SeqCst) + n as u64,
        };
        if dir == Direction::Up {
            let at = shared.blip_at.load(Ordering::SeqCst);
            if total >= at
                && shared
                    .blip_at
                    .compare_exchange(at, u64::MAX, Ordering::SeqCst, Ordering::SeqCst)
                    .is_ok()
            {
                conn.faulted.store(true, Ordering::SeqCst);
                shared.drop_all();
                return;
            }
        }
        let mut deliver = n;
        let mut then_cut = false;
        match &shared.fault {
            Fault::DieAfterSent(limit) if dir == Direction::Up && total >= *limit => {
                conn.break_off();
                shared.dead.cancel();
                return;
            }
            Fault::Cut {
                first,
                after,
                direction,
            } if conn.index < *first && dir == *direction => {
                let left = after.saturating_sub(passed);
                if n as u64 >= left {
                    deliver = left as usize; // < n, so it fits
                    then_cut = true;
                }
            }
            Fault::CutTimes {
                times,
                after,
                direction,
            } if dir == *direction => {
                let left = after.saturating_sub(passed);
                if n as u64 >= left
                    && shared
                        .cuts
                        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |c| {
                            (c < *times).then_some(c + 1)
                        })
                        .is_ok()
                {
                    deliver = left as usize; // < n, so it fits
                    then_cut = true;
                }
            }
            Fault::LoseAnswer { first, landed }
                if conn.index < *first && dir == Direction::Down && landed().await =>
            {
                conn.break_off();
                return;
            }
            Fault::FlipFirstBodyByte if dir == Direction::Down && flip.apply(&mut buf[..n]) => {
                conn.faulted.store(true, Ordering::SeqCst);
            }
            _ => {}
        }
        passed += n as u64;
        tokio::select! {
            r = to.write_all(&buf[..deliver]) => {
                if r.is_err() {
                    conn.cut.cancel();
                    return;
                }
            }
            _ = conn.cut.cancelled() => return,
        }
        if then_cut {
            conn.break_off();
            return;
        }
    }
}

/// Finds the end of the first response's head in a plain HTTP/1 stream and flips the byte
/// after it, once.
#[derive(Default)]
struct Flip {
    seen: Vec<u8>,
    done: bool,
}

impl Flip {
    /// Flips the first body byte if it is in `piece` (the next bytes of the stream); returns
    /// whether it did.
    fn apply(&mut self, piece: &mut [u8]) -> bool {
        if self.done {
            return false;
        }
        let start = self.seen.len();
        self.seen.extend_from_slice(piece);
        if let Some(end) = self.seen.windows(4).position(|w| w == b"\r\n\r\n") {
            let body_at = end + 4;
            if body_at < self.seen.len() && body_at >= start {
                piece[body_at - start] ^= 0x01;
                self.done = true;
                self.seen = Vec::new();
                return true;
            }
        }
        false
    }
}
