//! End-to-end tests: a real server on 127.0.0.1 port 0 with a temporary SQLite file,
//! driven by the client library or by raw TCP lines. Timeouts run in paused tokio
//! time, which auto-advances while the runtime idles.
#![allow(clippy::unwrap_used)]

mod accounts;
mod binary;
mod calls;
mod chat;
mod common;
mod files;
mod limits;
mod protocol;
mod relay;
mod sessions;
mod tls;
