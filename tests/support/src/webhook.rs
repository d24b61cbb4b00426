//! A webhook stand-in for the EDA provider: it accepts every event and counts them; the test
//! plays the automation.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// A webhook on a loopback port that answers 202 to every `POST /<path>`.
#[derive(Debug, Clone)]
pub struct CountingWebhook {
    url: String,
    hits: Arc<AtomicUsize>,
}

impl CountingWebhook {
    /// Starts it; it serves until the runtime ends.
    ///
    /// # Panics
    ///
    /// When no loopback port can be bound.
    #[allow(clippy::expect_used)]
    pub async fn start() -> CountingWebhook {
        let hits = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&hits);
        let app = axum::Router::new().route(
            "/{path}",
            axum::routing::post(move || {
                let counter = Arc::clone(&counter);
                async move {
                    counter.fetch_add(1, Ordering::SeqCst);
                    axum::http::StatusCode::ACCEPTED
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a loopback port");
        let url = format!("http://{}", listener.local_addr().expect("a bound address"));
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        CountingWebhook { url, hits }
    }

    /// `http://127.0.0.1:<port>`; events go to `<url>/provision`, `<url>/deprovision`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Events received so far.
    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}
