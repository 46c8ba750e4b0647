//! Where Magpie proves how fast it is and how well it holds up on a bad link: criterion
//! micro-benchmarks (`benches/`), the loss/latency lab, and the signaling load test.
pub mod lab;
