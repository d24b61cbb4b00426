//! The accept loop. The simulator serves connections itself, rather than with `axum::serve`, so
//! that a request can reset its own connection (fault injection) and so that shutdown is
//! graceful.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, watch};
use tokio::task::JoinSet;
use tower::ServiceExt as _;

/// How long open connections may take to finish after shutdown was requested.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Lets a request reset the TCP connection it arrived on.
#[derive(Clone, Debug)]
pub(crate) struct ConnKill(Arc<Notify>);

impl ConnKill {
    /// Resets the connection (TCP RST): no answer is sent.
    pub(crate) fn reset(&self) {
        self.0.notify_one();
    }
}

/// Serves `router` on `listener` until `shutdown` changes (or its sender is dropped).
pub(crate) async fn serve(
    listener: TcpListener,
    router: Router,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    conns.spawn(connection(stream, router.clone(), shutdown.clone()));
                }
                Err(e) => {
                    // For example too many open files: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
            _ = shutdown.changed() => break,
        }
    }
    drop(listener);
    let drained = tokio::time::timeout(SHUTDOWN_GRACE, async {
        while conns.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            open = conns.len(),
            "closing connections still open after the grace period"
        );
    }
    conns.shutdown().await;
}

async fn connection(stream: TcpStream, router: Router, mut shutdown: watch::Receiver<bool>) {
    let _ = stream.set_nodelay(true);
    // A second descriptor of the socket lets the reset set SO_LINGER 0 after hyper owns the
    // stream; the connection closes (with RST) once both are dropped.
    let split = stream
        .into_std()
        .and_then(|s| Ok((s.try_clone()?, s)))
        .and_then(|(dup, s)| Ok((dup, TcpStream::from_std(s)?)));
    let (dup, stream) = match split {
        Ok(pair) => pair,
        Err(e) => {
            tracing::warn!(error = %e, "preparing a connection failed");
            return;
        }
    };
    let kill = Arc::new(Notify::new());
    let conn_kill = ConnKill(Arc::clone(&kill));
    let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
        req.extensions_mut().insert(conn_kill.clone());
        router.clone().oneshot(req)
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .keep_alive(true)
        .serve_connection(TokioIo::new(stream), service);
    tokio::pin!(conn);
    let mut shutting_down = false;
    loop {
        tokio::select! {
            res = conn.as_mut() => {
                if let Err(e) = res {
                    tracing::debug!(error = %e, "connection ended with an error");
                }
                return;
            }
            _ = kill.notified() => {
                if let Err(e) = socket2::SockRef::from(&dup).set_linger(Some(Duration::ZERO)) {
                    tracing::debug!(error = %e, "SO_LINGER failed; the connection closes normally");
                }
                return;
            }
            _ = shutdown.changed(), if !shutting_down => {
                shutting_down = true;
                conn.as_mut().graceful_shutdown();
            }
        }
    }
}
