//! Where Magpie proves how fast it is and how well it holds up on a bad link: criterion
//! micro-benchmarks (`benches/`), the loss/latency lab, and the signaling load test.

/// The signaling load test (`sigload`): N clients log in, keep heartbeats, and set up a
/// burst of calls against a real server on loopback.
pub mod sigload;

/// The loss/latency lab: calls over a matrix of impaired links, in virtual and real time.
pub mod lab;
