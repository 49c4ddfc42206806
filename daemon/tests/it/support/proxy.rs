//! A TCP proxy on loopback between remedy and the DC, which a test can cut (every connection
//! through it closed, new ones refused) and restore: a network that drops remedy's connections
//! while the DC stays up for everyone else. Or one that records what crosses it
//! ([`Proxy::recording`]): what an eavesdropper on the network would read.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

pub struct Proxy {
    pub port: u16,
    cut: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    /// Forwards `127.0.0.1:<port>` to `target`.
    pub async fn start(target: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("proxy listens");
        let port = listener.local_addr().expect("proxy address").port();
        let (cut, cut_rx) = watch::channel(false);
        let cut_rx = Arc::new(cut_rx);
        let task = tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else { return };
                if *cut_rx.borrow() {
                    drop(client);
                    continue;
                }
                let mut cut = (*cut_rx).clone();
                tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(target).await else { return };
                    let (mut client, mut server) = (client, server);
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = cut.wait_for(|cut| *cut) => {}
                    }
                });
            }
        });
        Proxy { port, cut, task }
    }

    /// Forwards `127.0.0.1:<port>` to `target` and keeps every byte that crosses it, both ways.
    pub async fn recording(target: SocketAddr) -> (Proxy, Arc<Mutex<Vec<u8>>>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("proxy listens");
        let port = listener.local_addr().expect("proxy address").port();
        let (cut, _) = watch::channel(false);
        let wire = Arc::new(Mutex::new(Vec::new()));
        let seen = wire.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else { return };
                let seen = seen.clone();
                tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(target).await else { return };
                    let (client_read, client_write) = client.into_split();
                    let (server_read, server_write) = server.into_split();
                    tokio::join!(pump(client_read, server_write, seen.clone()), pump(server_read, client_write, seen));
                });
            }
        });
        (Proxy { port, cut, task }, wire)
    }

    /// Closes every connection through the proxy and refuses new ones.
    pub fn cut(&self) {
        let _ = self.cut.send(true);
    }

    pub fn restore(&self) {
        let _ = self.cut.send(false);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Copies one direction of a connection, keeping what it copies.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    seen: Arc<Mutex<Vec<u8>>>,
) {
    let mut buffer = vec![0; 16 * 1024];
    loop {
        match from.read(&mut buffer).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                seen.lock().expect("wire").extend_from_slice(&buffer[..n]);
                if to.write_all(&buffer[..n]).await.is_err() {
                    break;
                }
            }
        }
    }
    let _ = to.shutdown().await;
}
