//! Magpie signaling: the newline-delimited JSON protocol over TCP, the server
//! (`magpie-server`) and an async client.
