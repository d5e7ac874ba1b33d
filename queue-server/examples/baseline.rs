//! The physical limit of the HTTP stack on this machine, for `scripts/bench.sh`: the same axum /
//! hyper / tokio stack as `queue-server` (multi-threaded runtime, `TCP_NODELAY`, an axum
//! `Router`), reading each request's body and answering `204 No Content`, nothing else. A request
//! with `?wait=S` is held S seconds first, as an idle long poll would be, so that the cost of
//! holding connections can be compared too.
//!
//! `cargo run --release -p queue-server --example baseline -- 127.0.0.1:0`
//! prints `listening on ADDR` on stdout once it accepts connections.

use std::time::Duration;

use axum::Router;
use axum::extract::Request;
use axum::http::StatusCode;
use axum::serve::ListenerExt;

async fn answer(req: Request) -> StatusCode {
    let wait = req.uri().query().and_then(|q| {
        q.split('&')
            .find_map(|kv| kv.strip_prefix("wait="))
            .and_then(|s| s.parse::<f64>().ok())
    });
    if let Some(secs) = wait.filter(|s| s.is_finite() && *s > 0.0) {
        tokio::time::sleep(Duration::from_secs_f64(secs.min(60.0))).await;
    }
    // Receiving the body is part of the HTTP stack's work; the queue server reads it too.
    match axum::body::to_bytes(req.into_body(), 64 << 20).await {
        Ok(_) => StatusCode::NO_CONTENT,
        Err(_) => StatusCode::PAYLOAD_TOO_LARGE,
    }
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:0".into());
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    println!("listening on {}", listener.local_addr()?);
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    let app = Router::new().fallback(answer);
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await
}
