//! Integration tests against real `nats-server` processes started by the testkit: one server
//! with JetStream, or a three-server cluster. Each test starts its own servers on free ports.

mod journal;
mod leases;
mod snapshots;
mod support;
mod testkit;
