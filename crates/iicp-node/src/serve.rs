//! Serving connections on one single-threaded runtime per core.
//!
//! Why: a task is a short burst of work on two sockets (caller, backend). On a work-stealing
//! runtime each burst tends to wake a parked worker thread and hop between threads, and on a
//! small machine those wake-ups cost more CPU than the task's own work (BENCHMARKS.md). Here one
//! acceptor hands each accepted connection, round robin, to a worker thread that owns it for
//! its whole life: the connection's requests, its backend calls (the lean client keeps idle
//! backend connections per thread) and its timers all stay on that thread.
//!
//! With `workers <= 1` the router is served on the caller's runtime instead.

use axum::Router;
use std::io;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

/// Accepted connections waiting for their worker; past this the acceptor waits.
const HANDOFF_QUEUE: usize = 64;

/// Serves `app` on `listener` until `stopped` turns true, then lets in-flight requests finish.
/// The handle completes when every worker has stopped.
pub fn serve(
    listener: TcpListener,
    app: Router,
    workers: usize,
    stopped: watch::Receiver<bool>,
) -> io::Result<JoinHandle<()>> {
    let addr = listener.local_addr()?;
    if workers <= 1 {
        return Ok(tokio::spawn(serve_on(listener, app, stopped)));
    }
    let mut queues = Vec::with_capacity(workers);
    let mut finished = Vec::with_capacity(workers);
    for i in 0..workers {
        let (queue, handoff) = mpsc::channel(HANDOFF_QUEUE);
        let (done, stopped_here) = oneshot::channel::<()>();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let (app, until) = (app.clone(), stopped.clone());
        std::thread::Builder::new()
            .name(format!("iicp-node-{i}"))
            .spawn(move || {
                let listener = Handoff { handoff, addr };
                runtime.block_on(serve_on(listener, app, until));
                drop(runtime);
                let _ = done.send(());
            })?;
        queues.push(queue);
        finished.push(stopped_here);
    }
    Ok(tokio::spawn(async move {
        accept_loop(listener, queues, stopped).await;
        for worker in finished {
            let _ = worker.await;
        }
    }))
}

async fn serve_on<L>(listener: L, app: Router, mut stopped: watch::Receiver<bool>)
where
    L: axum::serve::Listener,
    L::Addr: std::fmt::Debug,
{
    let serve = axum::serve(listener, app).with_graceful_shutdown(async move {
        let _ = stopped.wait_for(|s| *s).await;
    });
    if let Err(e) = serve.await {
        tracing::error!(error = %e, "node server stopped with an error");
    }
}

/// Accepts until stopped, handing connections to the workers in turn. Dropping the queues at
/// the end is what lets each worker's server run out of connections to wait for.
async fn accept_loop(
    listener: TcpListener,
    mut queues: Vec<mpsc::Sender<std::net::TcpStream>>,
    mut stopped: watch::Receiver<bool>,
) {
    let mut next = 0;
    while !queues.is_empty() {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stopped.wait_for(|s| *s) => return,
        };
        let stream = match accepted.and_then(|(stream, _)| stream.into_std()) {
            Ok(stream) => stream,
            Err(e) => {
                // Out of descriptors and the like: give in-flight work a moment to free some.
                tracing::warn!(error = %e, "accepting a connection failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        next %= queues.len();
        if let Err(mpsc::error::SendError(stream)) = queues[next].send(stream).await {
            // Not expected (a worker runs until shutdown); the others take its share.
            tracing::error!("a node worker thread is gone");
            queues.swap_remove(next);
            if let Some(queue) = queues.get(next % queues.len().max(1)) {
                let _ = queue.send(stream).await;
            }
            continue;
        }
        next += 1;
    }
    tracing::error!("every node worker thread is gone; no longer accepting");
}

/// The worker side of the handoff, as the listener its server accepts from.
struct Handoff {
    handoff: mpsc::Receiver<std::net::TcpStream>,
    addr: SocketAddr,
}

impl axum::serve::Listener for Handoff {
    type Io = TcpStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (TcpStream, SocketAddr) {
        loop {
            let Some(stream) = self.handoff.recv().await else {
                // The acceptor stopped: no connection will come; shutdown ends the server.
                return std::future::pending().await;
            };
            let registered = TcpStream::from_std(stream).and_then(|s| {
                s.set_nodelay(true)?;
                let peer = s.peer_addr()?;
                Ok((s, peer))
            });
            match registered {
                Ok(accepted) => return accepted,
                Err(e) => tracing::debug!(error = %e, "a handed-off connection was unusable"),
            }
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.addr)
    }
}
