//! Our tower layer in a salvo app, unchanged: `SessionLayer`, converted by
//! salvo's `tower-compat` feature, is a hoop of the router; handlers find
//! the `Session` in the request's extensions.
//!
//! ```text
//! cargo run -p sessions-compat --example salvo
//! curl -c jar -b jar localhost:8080/     # 1, 2, 3 …
//! ```

use salvo::prelude::*;
use server_sessions::store::MemoryStore;
use server_sessions::SessionLayer;

#[tokio::main]
async fn main() {
    let router = sessions_compat::router(SessionLayer::new(MemoryStore::new()));
    let acceptor = TcpListener::new("127.0.0.1:8080").bind().await;
    println!("http://127.0.0.1:8080/");
    Server::new(acceptor).serve(router).await;
}
