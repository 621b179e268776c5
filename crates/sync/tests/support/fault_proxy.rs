//! A TCP proxy between the sync client and the real backend that injects network faults, one
//! per HTTP request, from a queue the test controls. It understands just enough HTTP/1.1
//! (a head, then a `Content-Length` body) to apply a fault to each request on a kept-alive
//! connection.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// What happens to one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Forwarded untouched.
    Pass,
    /// The connection is reset before the request reaches the server.
    ResetBeforeServer,
    /// The server handles (and commits) the request, then the connection is reset before the
    /// client reads the answer.
    ResetAfterServer,
    /// The server's answer is held for this long (past the client's timeout).
    Stall(Duration),
    /// The proxy answers this status itself (with `Retry-After: 1` for 503 and 429).
    Status(u16),
    /// The request reaches the server twice; the client sees the first answer.
    Duplicate,
}

/// The proxy; dropping it stops it.
pub struct FaultProxy {
    pub url: String,
    address: SocketAddr,
    upstream: Arc<Mutex<SocketAddr>>,
    faults: Arc<Mutex<VecDeque<Fault>>>,
    accepting: Mutex<Option<JoinHandle<()>>>,
}

impl FaultProxy {
    pub async fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let proxy = Self {
            url: format!("http://{address}"),
            address,
            upstream: Arc::new(Mutex::new(upstream)),
            faults: Arc::new(Mutex::new(VecDeque::new())),
            accepting: Mutex::new(None),
        };
        proxy.serve(listener);
        proxy
    }

    fn serve(&self, listener: TcpListener) {
        let upstream = self.upstream.clone();
        let faults = self.faults.clone();
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                tokio::spawn(relay(client, upstream.clone(), faults.clone()));
            }
        });
        *self.accepting.lock().unwrap() = Some(task);
    }

    /// Queues faults for the next requests; requests after the queue runs out pass.
    pub fn inject(&self, faults: &[Fault]) {
        self.faults.lock().unwrap().extend(faults.iter().copied());
    }

    /// Faults not yet used.
    pub fn pending(&self) -> usize {
        self.faults.lock().unwrap().len()
    }

    /// Stops listening: new connections are refused by the OS.
    pub fn refuse_connections(&self) {
        if let Some(task) = self.accepting.lock().unwrap().take() {
            task.abort();
        }
    }

    /// Listens again on the same port.
    pub async fn accept_connections(&self) {
        let listener = loop {
            match TcpListener::bind(self.address).await {
                Ok(listener) => break listener,
                // The aborted accept task may not have released the port yet.
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            }
        };
        self.serve(listener);
    }

    /// Points the proxy at a (restarted) server.
    pub fn set_upstream(&self, upstream: SocketAddr) {
        *self.upstream.lock().unwrap() = upstream;
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.refuse_connections();
    }
}

async fn relay(
    mut client: TcpStream,
    upstream: Arc<Mutex<SocketAddr>>,
    faults: Arc<Mutex<VecDeque<Fault>>>,
) {
    let mut server: Option<TcpStream> = None;
    let mut buffer = Vec::new();
    loop {
        let Some(request) = read_message(&mut client, &mut buffer).await else {
            return;
        };
        let fault = faults.lock().unwrap().pop_front().unwrap_or(Fault::Pass);
        match fault {
            Fault::ResetBeforeServer => return reset(client),
            Fault::Status(code) => {
                let retry_after = if matches!(code, 429 | 503) {
                    "Retry-After: 1\r\n"
                } else {
                    ""
                };
                let answer =
                    format!("HTTP/1.1 {code} Injected\r\n{retry_after}Content-Length: 0\r\n\r\n");
                if client.write_all(answer.as_bytes()).await.is_err() {
                    return;
                }
                continue;
            }
            _ => {}
        }
        if server.is_none() {
            let address = *upstream.lock().unwrap();
            match TcpStream::connect(address).await {
                Ok(stream) => server = Some(stream),
                Err(_) => return reset(client),
            }
        }
        let Some(upstream_stream) = server.as_mut() else {
            return;
        };
        let mut server_buffer = Vec::new();
        let Some(answer) = exchange(upstream_stream, &request, &mut server_buffer).await else {
            return reset(client);
        };
        match fault {
            Fault::ResetAfterServer => return reset(client),
            Fault::Stall(duration) => tokio::time::sleep(duration).await,
            Fault::Duplicate
                if exchange(upstream_stream, &request, &mut server_buffer)
                    .await
                    .is_none() =>
            {
                return reset(client);
            }
            _ => {}
        }
        if client.write_all(&answer).await.is_err() {
            return;
        }
    }
}

/// Sends one request to the server and reads its whole answer.
async fn exchange(server: &mut TcpStream, request: &[u8], buffer: &mut Vec<u8>) -> Option<Vec<u8>> {
    server.write_all(request).await.ok()?;
    read_message(server, buffer).await
}

/// Closes with RST instead of FIN, as a dropped network path looks to the peer.
fn reset(stream: TcpStream) {
    let _ = stream.set_zero_linger();
    drop(stream);
}

/// Reads one HTTP/1.1 message (head + `Content-Length` body); `None` at end of stream.
async fn read_message(stream: &mut TcpStream, buffer: &mut Vec<u8>) -> Option<Vec<u8>> {
    let head_end = loop {
        if let Some(position) = buffer.windows(4).position(|window| window == b"\r\n\r\n") {
            break position + 4;
        }
        let mut chunk = [0u8; 8192];
        let read = stream.read(&mut chunk).await.ok()?;
        if read == 0 {
            return None;
        }
        buffer.extend_from_slice(&chunk[..read]);
    };
    let head = String::from_utf8_lossy(&buffer[..head_end]).to_ascii_lowercase();
    assert!(
        !head.contains("transfer-encoding: chunked"),
        "the fault proxy only understands Content-Length bodies"
    );
    let length: usize = head
        .lines()
        .find_map(|line| line.strip_prefix("content-length:"))
        .map_or(0, |value| value.trim().parse().unwrap_or(0));
    while buffer.len() < head_end + length {
        let mut chunk = [0u8; 8192];
        let read = stream.read(&mut chunk).await.ok()?;
        if read == 0 {
            return None;
        }
        buffer.extend_from_slice(&chunk[..read]);
    }
    Some(buffer.drain(..head_end + length).collect())
}
