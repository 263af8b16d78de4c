//! The smallest HTTP/1.1 server that serves a scrape correctly: GET (or
//! HEAD) of `/metrics` or `/healthz`, one request per connection, answered
//! with a Content-Length and `Connection: close`. hyper would bring a
//! stack of crates for two fixed pages; a scraper needs no keep-alive,
//! chunking or bodies. Runs on its own thread and runtime, so a slow
//! scraper never touches the job's threads; each connection gets 5 s and
//! at most 16 are served at once.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::{oneshot, Semaphore};

use super::board::Board;
use super::encode;
use super::MetricsError;

/// Request heads larger than this are refused.
const MAX_HEAD: usize = 8 << 10;

pub struct Server {
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Server {
    /// Binds now (so a taken port is an error before the job starts) and
    /// serves on a thread of its own.
    pub fn start(listen: SocketAddr, board: Arc<Board>) -> Result<Server, MetricsError> {
        let bind = |source| MetricsError::Bind {
            addr: listen,
            source,
        };
        let std_listener = std::net::TcpListener::bind(listen).map_err(bind)?;
        std_listener.set_nonblocking(true).map_err(bind)?;
        let addr = std_listener.local_addr().map_err(bind)?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(MetricsError::Thread)?;
        let (stop, stopped) = oneshot::channel();
        let thread = std::thread::Builder::new()
            .name("metrics".into())
            .spawn(move || {
                rt.block_on(async move {
                    let listener = match TcpListener::from_std(std_listener) {
                        Ok(l) => l,
                        Err(e) => {
                            tracing::error!("metrics: {addr}: {e}");
                            return;
                        }
                    };
                    tokio::select! {
                        _ = serve(listener, board) => {}
                        _ = stopped => {}
                    }
                })
            })
            .map_err(MetricsError::Thread)?;
        tracing::info!("metrics: serving http://{addr}/metrics and /healthz");
        Ok(Server {
            addr,
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

async fn serve(listener: TcpListener, board: Arc<Board>) {
    let registry = Arc::new(encode::registry(board.clone()));
    let slots = Arc::new(Semaphore::new(16));
    loop {
        let (mut sock, _) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                // Out of descriptors, say: wait a little and go on.
                tracing::debug!("metrics: accept: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            continue;
        };
        let (board, registry) = (board.clone(), registry.clone());
        tokio::spawn(async move {
            let _slot = slot;
            let _ = tokio::time::timeout(Duration::from_secs(5), async {
                let head = read_head(&mut sock).await;
                let resp = match head {
                    Ok(h) => match route(&h) {
                        Ok(req) => answer(req, &board, &registry),
                        Err(e) => e,
                    },
                    Err(e) => e,
                };
                let _ = sock.write_all(&resp.bytes()).await;
                let _ = sock.shutdown().await;
            })
            .await;
        });
    }
}

/// Reads until the end of the request head (a blank line).
async fn read_head<S: tokio::io::AsyncRead + Unpin>(sock: &mut S) -> Result<Vec<u8>, Response> {
    let mut buf = Vec::with_capacity(512);
    let mut chunk = [0u8; 1024];
    loop {
        if let Some(end) = find_end(&buf) {
            buf.truncate(end);
            return Ok(buf);
        }
        if buf.len() > MAX_HEAD {
            return Err(Response::text(431, "request header fields too large\n"));
        }
        match sock.read(&mut chunk).await {
            Ok(0) | Err(_) => return Err(Response::text(400, "incomplete request\n")),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

fn find_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n").or_else(|| {
        // Bare LF line ends, as RFC 9112 lets a server accept.
        buf.windows(2).position(|w| w == b"\n\n")
    })
}

/// What was asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Request {
    pub page: Page,
    /// HEAD: the same answer without its body.
    pub head_only: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Page {
    Metrics,
    Health,
}

/// The request line of a head: a page, or the error response to send.
pub fn route(head: &[u8]) -> Result<Request, Response> {
    let bad = || Response::text(400, "bad request\n");
    let line = head.split(|b| *b == b'\n').next().ok_or_else(bad)?;
    let line = std::str::from_utf8(line)
        .map_err(|_| bad())?
        .trim_end_matches('\r');
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(bad());
    };
    if !matches!(version, "HTTP/1.1" | "HTTP/1.0") {
        return Err(Response::text(505, "HTTP version not supported\n"));
    }
    if !target.starts_with('/') {
        return Err(bad());
    }
    let head_only = match method {
        "GET" => false,
        "HEAD" => true,
        m if !m.is_empty() && m.bytes().all(|b| b.is_ascii_uppercase()) => {
            return Err(Response::text(405, "only GET and HEAD\n").allow())
        }
        _ => return Err(bad()),
    };
    // A query string changes nothing (scrapers may add one).
    let path = target.split('?').next().unwrap_or(target);
    let page = match path {
        "/metrics" => Page::Metrics,
        "/healthz" => Page::Health,
        _ => return Err(Response::text(404, "not found: try /metrics or /healthz\n")),
    };
    Ok(Request { page, head_only })
}

fn answer(
    req: Request,
    board: &Board,
    registry: &prometheus_client::registry::Registry,
) -> Response {
    let mut r = match req.page {
        Page::Metrics => Response {
            status: 200,
            content_type: "application/openmetrics-text; version=1.0.0; charset=utf-8",
            body: encode::text(registry).into_bytes(),
            allow: false,
            head_only: false,
        },
        Page::Health => {
            let problems = board.health.problems(board);
            if problems.is_empty() {
                Response::text(200, "ok\n")
            } else {
                let mut body = problems.join("\n");
                body.push('\n');
                Response::text(503, &body)
            }
        }
    };
    r.head_only = req.head_only;
    r
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub content_type: &'static str,
    pub body: Vec<u8>,
    allow: bool,
    /// HEAD: the headers GET would get, no body.
    head_only: bool,
}

impl Response {
    fn text(status: u16, body: &str) -> Response {
        Response {
            status,
            content_type: "text/plain; charset=utf-8",
            body: body.as_bytes().to_vec(),
            allow: false,
            head_only: false,
        }
    }

    fn allow(mut self) -> Response {
        self.allow = true;
        self
    }

    fn reason(&self) -> &'static str {
        match self.status {
            200 => "OK",
            400 => "Bad Request",
            404 => "Not Found",
            405 => "Method Not Allowed",
            431 => "Request Header Fields Too Large",
            503 => "Service Unavailable",
            505 => "HTTP Version Not Supported",
            _ => "",
        }
    }

    /// The response on the wire.
    pub fn bytes(&self) -> Vec<u8> {
        let mut out = format!(
            "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n",
            self.status,
            self.reason(),
            self.content_type,
            self.body.len()
        );
        if self.allow {
            out.push_str("Allow: GET, HEAD\r\n");
        }
        out.push_str("\r\n");
        let mut b = out.into_bytes();
        if !self.head_only {
            b.extend_from_slice(&self.body);
        }
        b
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_the_two_pages() {
        let r = route(b"GET /metrics HTTP/1.1\r\nHost: x").unwrap();
        assert_eq!(r.page, Page::Metrics);
        assert!(!r.head_only);
        let r = route(b"HEAD /healthz?verbose=1 HTTP/1.0").unwrap();
        assert_eq!(r.page, Page::Health);
        assert!(r.head_only);
    }

    #[test]
    fn bad_requests_get_their_status() {
        let status = |h: &[u8]| route(h).unwrap_err().status;
        assert_eq!(status(b"GET /nope HTTP/1.1"), 404);
        assert_eq!(status(b"GET / HTTP/1.1"), 404);
        assert_eq!(status(b"POST /metrics HTTP/1.1"), 405);
        assert!(route(b"POST /metrics HTTP/1.1")
            .unwrap_err()
            .bytes()
            .windows(5)
            .any(|w| w == b"Allow"));
        assert_eq!(status(b"GET /metrics HTTP/2.0"), 505);
        assert_eq!(status(b"GET /metrics"), 400);
        assert_eq!(status(b"GET  /metrics HTTP/1.1"), 400);
        assert_eq!(status(b"get /metrics HTTP/1.1"), 400);
        assert_eq!(status(b"GET metrics HTTP/1.1"), 400);
        assert_eq!(status(b""), 400);
        assert_eq!(status(b"\xff\xfe /metrics HTTP/1.1"), 400);
    }

    #[test]
    fn garbage_never_panics() {
        let mut rng = crate::rng::Rng::new(7);
        for _ in 0..20_000 {
            let n = (rng.next_u64() % 64) as usize;
            let mut h: Vec<u8> = (0..n).map(|_| rng.next_u64() as u8).collect();
            if rng.chance(0.5) {
                // Near misses: a valid start with noise after it.
                let mut v = b"GET /metrics ".to_vec();
                v.append(&mut h);
                h = v;
            }
            if let Err(r) = route(&h) {
                assert!(matches!(r.status, 400 | 404 | 405 | 505), "{r:?}");
                let b = r.bytes();
                assert!(b.starts_with(b"HTTP/1.1 "));
            }
        }
    }

    #[test]
    fn the_head_ends_at_a_blank_line_and_stays_bounded() {
        assert_eq!(find_end(b"GET / HTTP/1.1\r\nA: b\r\n\r\nrest"), Some(20));
        assert_eq!(find_end(b"GET / HTTP/1.1\n\n"), Some(14));
        assert_eq!(find_end(b"GET / HTTP/1.1\r\n"), None);
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let big = vec![b'a'; MAX_HEAD + 4096];
        let r = rt.block_on(read_head(&mut &big[..])).unwrap_err();
        assert_eq!(r.status, 431);
        let r = rt
            .block_on(read_head(&mut &b"GET /metrics HTTP/1.1\r\n"[..]))
            .unwrap_err();
        assert_eq!(r.status, 400);
    }

    #[test]
    fn serves_both_pages_over_a_socket() {
        use std::io::{Read, Write};
        let board = Arc::new(Board::default());
        board.engine("").publish(vmflow_engine::Progress {
            packets: 3,
            ..Default::default()
        });
        let server = Server::start("127.0.0.1:0".parse().unwrap(), board.clone()).unwrap();
        let get = |req: &[u8]| {
            let mut s = std::net::TcpStream::connect(server.addr).unwrap();
            s.write_all(req).unwrap();
            let mut out = String::new();
            s.read_to_string(&mut out).unwrap();
            out
        };
        let m = get(b"GET /metrics HTTP/1.1\r\nHost: a\r\n\r\n");
        assert!(m.starts_with("HTTP/1.1 200 OK\r\n"), "{m}");
        assert!(m.contains("vmflow_packets_total{stream=\"\"} 3\n"), "{m}");
        let h = get(b"GET /healthz HTTP/1.1\r\n\r\n");
        assert!(h.starts_with("HTTP/1.1 503 "), "{h}");
        assert!(h.ends_with("\r\n\r\nsource: not open yet\n"), "{h}");
        board.health.source(super::super::SourceState::Open);
        let h = get(b"GET /healthz HTTP/1.1\r\n\r\n");
        assert!(
            h.starts_with("HTTP/1.1 200 OK\r\n") && h.ends_with("\r\n\r\nok\n"),
            "{h}"
        );
        let g = get(b"\x00\x01garbage\r\n\r\n");
        assert!(g.starts_with("HTTP/1.1 400 "), "{g}");
        drop(server);
    }
}
