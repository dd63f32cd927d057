//! What the keys crate's integration tests share: a runtime, a real server
//! on a free port, and the fast key-stretching parameters.

use std::path::Path;

use peers_keys::{ClientConfig, Limits, Server};

pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

/// Starts a server over `dir` on a free port; returns its address.
pub async fn start(dir: &Path, limits: Limits) -> (String, tokio::task::JoinHandle<()>) {
    let server = Server::open(dir, limits).expect("opens the store");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("binds");
    let address = listener.local_addr().expect("address").to_string();
    let task = tokio::spawn(async move {
        let _ = server.serve(listener).await;
    });
    (address, task)
}

pub fn fast() -> ClientConfig {
    ClientConfig::insecure_fast_for_tests()
}
