//! A TCP proxy a test puts between a client and a service to play a misbehaving network:
//! replies held back (the peer stalls past its deadline after doing the work), or the
//! service unreachable (connections cut and refused).

use std::net::SocketAddr;

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{
        TcpListener, TcpStream,
        tcp::{OwnedReadHalf, OwnedWriteHalf},
    },
    sync::watch,
    task::JoinHandle,
};

/// What the proxy does with traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Forwards both ways.
    Pass,
    /// Forwards requests; holds every reply until the mode changes (the service works, the
    /// client hears nothing).
    HoldReplies,
    /// Closes every connection and refuses new ones (nothing reaches the service).
    Down,
}

/// A running proxy; dropping it stops it.
pub struct Proxy {
    /// Where clients connect.
    pub addr: SocketAddr,
    mode: watch::Sender<Mode>,
    task: JoinHandle<()>,
}

impl Proxy {
    /// Proxies a port of its own to `upstream`, starting in `mode`.
    pub async fn start(upstream: SocketAddr, mode: Mode) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind port 0");
        let addr = listener.local_addr().expect("local addr");
        let (tx, rx) = watch::channel(mode);
        let task = tokio::spawn(accept(listener, upstream, rx));
        Proxy {
            addr,
            mode: tx,
            task,
        }
    }

    /// Switches mode; held replies flow again on `Pass`.
    pub fn set(&self, mode: Mode) {
        self.mode.send_replace(mode);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn accept(listener: TcpListener, upstream: SocketAddr, mode: watch::Receiver<Mode>) {
    let mut connections = Vec::new();
    while let Ok((client, _)) = listener.accept().await {
        if *mode.borrow() == Mode::Down {
            continue;
        }
        connections.retain(|c: &JoinHandle<()>| !c.is_finished());
        connections.push(tokio::spawn(connection(client, upstream, mode.clone())));
    }
}

async fn connection(client: TcpStream, upstream: SocketAddr, mode: watch::Receiver<Mode>) {
    let Ok(server) = TcpStream::connect(upstream).await else {
        return;
    };
    let _ = (client.set_nodelay(true), server.set_nodelay(true));
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    // Either direction ending ends both: the sockets close together.
    tokio::select! {
        () = pipe(client_read, server_write, mode.clone(), false) => {}
        () = pipe(server_read, client_write, mode, true) => {}
    }
}

async fn pipe(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    mut mode: watch::Receiver<Mode>,
    replies: bool,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let now = *mode.borrow_and_update();
        match now {
            Mode::Down => return,
            Mode::HoldReplies if replies => {
                if mode.changed().await.is_err() {
                    return;
                }
                continue;
            }
            _ => {}
        }
        tokio::select! {
            read = from.read(&mut buf) => match read {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    if to.write_all(&buf[..n]).await.is_err() {
                        return;
                    }
                }
            },
            changed = mode.changed() => {
                if changed.is_err() {
                    return;
                }
            }
        }
    }
}
