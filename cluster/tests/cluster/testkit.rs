//! The testkit's control of single servers: what end-to-end tests of a cluster rely on.

use std::time::Duration;

use matchwell_actors::change_log::ChangeLog;
use matchwell_cluster::testkit::NatsCluster;
use matchwell_cluster::{ClusterStore, JetStreamLog};
use tokio::runtime::Handle;

use crate::support::{config, record, seeded_rng};

/// Whether a NATS client can connect to `url` within a short time. The whole handshake is
/// bounded: a paused server accepts the TCP connection (the kernel does) but never greets.
async fn answers(url: String) -> bool {
    let connect = async_nats::ConnectOptions::new()
        .connection_timeout(Duration::from_millis(300))
        .connect(url);
    matches!(
        tokio::time::timeout(Duration::from_millis(500), connect).await,
        Ok(Ok(_))
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_can_be_paused_resumed_killed_and_restarted_with_its_data() {
    let mut nats = NatsCluster::start(3).unwrap();
    assert_eq!(nats.urls().split(',').count(), 3);
    let mut rng = seeded_rng("testkit");

    nats.pause(1).unwrap();
    assert!(
        !answers(nats.url(1)).await,
        "a paused server answers nothing"
    );
    nats.resume(1).unwrap();
    assert!(answers(nats.url(1)).await);

    // Written with three replicas, then one server is killed and restarted with its name,
    // ports and store: it answers again at the same address.
    let store = ClusterStore::connect(config(&nats, 4)).await.unwrap();
    let log = JetStreamLog::open(&store, 0, 0, &Handle::current());
    let seq = log.append(&record(1, &mut rng)).unwrap();
    log.wait_durable(seq).await.unwrap();
    drop((log, store));
    nats.kill(2).unwrap();
    assert!(!answers(nats.url(2)).await);
    tokio::task::block_in_place(|| nats.restart(2)).unwrap();
    assert!(answers(nats.url(2)).await);
    assert!(nats.log(2).exists());
    assert!(nats.pause(5).is_err());
}
