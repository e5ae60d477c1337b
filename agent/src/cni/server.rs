//! The agent's side: accepts plugin connections and hands each request to the
//! reconcile loop, which answers once the pod is enforced (or gives up).

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixListener;
use tokio::sync::{mpsc, oneshot};

use super::protocol::{Request, Response};

/// A request on its way to the loop, with where to send the answer.
#[derive(Debug)]
pub struct CniCall {
    /// The request.
    pub request: Request,
    /// The answer goes here.
    pub reply: oneshot::Sender<Response>,
}

/// Binds the socket (replacing a stale one left by a previous agent).
pub fn bind(path: &Path) -> std::io::Result<UnixListener> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    UnixListener::bind(path)
}

/// Serves plugin connections until `calls` is closed.
pub async fn serve(listener: UnixListener, path: PathBuf, calls: mpsc::Sender<CniCall>) {
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(socket = %path.display(), error = %crate::errors::chain(&e), "CNI socket accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let calls = calls.clone();
        tokio::spawn(async move {
            let (read, mut write) = stream.into_split();
            let mut line = String::new();
            let mut reader = BufReader::new(read);
            let response = match reader.read_line(&mut line).await {
                Ok(0) => return,
                Ok(_) => match serde_json::from_str::<Request>(&line) {
                    Ok(request) => {
                        let (tx, rx) = oneshot::channel();
                        if calls.send(CniCall { request, reply: tx }).await.is_err() {
                            Response::error("the agent is shutting down")
                        } else {
                            rx.await.unwrap_or_else(|_| {
                                Response::error("the agent dropped the request")
                            })
                        }
                    }
                    Err(e) => Response::error(format!("malformed request: {e}")),
                },
                Err(e) => Response::error(format!("reading the request: {e}")),
            };
            let mut out =
                serde_json::to_string(&response).unwrap_or_else(|_| "{\"ok\":false}".into());
            out.push('\n');
            let _ = write.write_all(out.as_bytes()).await;
        });
    }
}
