//! Partition leases, node announcements, and the partition count fixed at the first start.

use std::time::{Duration, Instant};

use matchwell_cluster::assignment::PLACEMENT;
use matchwell_cluster::store::{CLUSTER_BUCKET, LEASES_BUCKET};
use matchwell_cluster::testkit::NatsCluster;
use matchwell_cluster::{
    ClusterStore, Lease, LeaseError, LeaseKey, LeaseUpdate, NodeInfo, StoreError,
};

use crate::support::{config, connect, eventually, next_update, raw_jetstream};

fn node(id: &str) -> NodeInfo {
    NodeInfo::new(id, format!("http://{id}.test:8080")).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_is_exclusive_until_its_holder_stops_renewing() {
    let nats = NatsCluster::start(1).unwrap();
    let store = connect(&nats).await;
    let ttl = store.config().lease_ttl;
    let (one, two) = (node("one"), node("two"));

    let mut held = Lease::acquire(&store, 4, &one).await.unwrap();
    assert!(held.may_be_held());
    match Lease::acquire(&store, 4, &two).await {
        Err(LeaseError::Held { holder, .. }) => assert_eq!(holder, Some(one.clone())),
        other => panic!("a held lease was taken: {other:?}"),
    }
    let first = held.revision();
    assert!(held.renew().await.unwrap() > first);
    assert_eq!(store.lease_holder(4).await.unwrap(), Some(one.clone()));
    assert!(Lease::acquire(&store, 4, &two).await.is_err());

    // Someone else writes the key: the next compare-and-set fails though the TTL has not run.
    let leases = raw_jetstream(&nats)
        .await
        .get_key_value(LEASES_BUCKET)
        .await
        .unwrap();
    let mut stolen = Lease::acquire(&store, 5, &one).await.unwrap();
    leases.put("lease.5", "someone else".into()).await.unwrap();
    assert!(stolen.may_be_held());
    assert!(matches!(stolen.renew().await, Err(LeaseError::Lost { .. })));

    // `one` stops renewing; `two` polls like a standby does.
    let last_renewal = Instant::now();
    let taken = eventually("the lease to expire", ttl * 5, || {
        let (store, two) = (store.clone(), two.clone());
        async move { Lease::acquire(&store, 4, &two).await.ok() }
    })
    .await;
    let takeover = last_renewal.elapsed();
    eprintln!("lease of TTL {ttl:?} taken over {takeover:?} after the last renewal");
    assert!(
        !held.may_be_held(),
        "the old holder's clock must say the lease may be gone before anyone can take it"
    );
    assert_eq!(store.lease_holder(4).await.unwrap(), Some(two.clone()));
    // Its renewal fails: by its own clock the lease is over, and the key is someone else's.
    assert!(matches!(
        held.renew().await,
        Err(LeaseError::Expired { .. } | LeaseError::Lost { .. })
    ));
    assert!(matches!(held.release().await, Err(LeaseError::Lost { .. })));

    // A release hands the partition over at once.
    taken.release().await.unwrap();
    assert_eq!(store.lease_holder(4).await.unwrap(), None);
    Lease::acquire(&store, 4, &one).await.unwrap();
}

/// Watchers learn of an announcement and of its withdrawal; an announcement nobody renews
/// leaves the bucket once the TTL has passed. (Watchers are not told of that expiry: a
/// node's view ages announcements by its own clock, see `src/cluster/view.rs`.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_announcement_lasts_until_withdrawn_or_its_ttl_passes() {
    let nats = NatsCluster::start(1).unwrap();
    let store = connect(&nats).await;
    let (one, two) = (node("one"), node("two"));
    let mut watch = store.watch_leases().await.unwrap();
    store.announce(&one).await.unwrap();
    store.announce(&two).await.unwrap();
    let announced = [next_update(&mut watch).await, next_update(&mut watch).await];
    assert_eq!(
        announced.map(|update| (update.key, update.value)),
        [
            (LeaseKey::Node("one".to_owned()), Some(one.clone())),
            (LeaseKey::Node("two".to_owned()), Some(two.clone())),
        ]
    );

    store.withdraw(&two).await.unwrap();
    let withdrawn = next_update(&mut watch).await;
    assert_eq!(
        (withdrawn.key, withdrawn.value),
        (LeaseKey::Node("two".to_owned()), None)
    );

    let leases = raw_jetstream(&nats)
        .await
        .get_key_value(LEASES_BUCKET)
        .await
        .unwrap();
    assert!(leases.get("node.one").await.unwrap().is_some());
    let ttl = store.config().lease_ttl;
    eventually("the announcement to expire", ttl * 5, || {
        let leases = leases.clone();
        async move {
            leases
                .get("node.one")
                .await
                .unwrap()
                .is_none()
                .then_some(())
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_with_another_partition_count_is_refused() {
    let nats = NatsCluster::start(1).unwrap();
    ClusterStore::connect(config(&nats, 8)).await.unwrap();
    ClusterStore::connect(config(&nats, 8)).await.unwrap();
    let refused = ClusterStore::connect(config(&nats, 16)).await.unwrap_err();
    assert!(
        matches!(
            refused,
            StoreError::PartitionCountMismatch {
                cluster: 8,
                configured: 16
            }
        ),
        "{refused:?}"
    );
    let message = refused.to_string();
    assert!(
        message.contains("this cluster has 8 partitions")
            && message.contains("started with 16")
            && message.contains("start it with 8 partitions"),
        "{message}"
    );
}

/// A cluster records how its nodes place partitions; a node whose build places them
/// otherwise is refused, as nodes that disagree on the map would leave partitions ownerless.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_places_partitions_otherwise_is_refused() {
    let nats = NatsCluster::start(1).unwrap();
    ClusterStore::connect(config(&nats, 8)).await.unwrap();
    let settings = raw_jetstream(&nats)
        .await
        .get_key_value(CLUSTER_BUCKET)
        .await
        .unwrap();
    let recorded = settings.get("placement").await.unwrap().unwrap();
    assert_eq!(&recorded[..], PLACEMENT.as_bytes());

    settings
        .put("placement", "some-other-scheme".into())
        .await
        .unwrap();
    let refused = ClusterStore::connect(config(&nats, 8)).await.unwrap_err();
    assert!(
        matches!(&refused, StoreError::PlacementMismatch { cluster, this }
            if cluster == "some-other-scheme" && *this == PLACEMENT),
        "{refused:?}"
    );
    assert!(
        refused
            .to_string()
            .contains("start them all with one build"),
        "{refused}"
    );
}

#[tokio::test]
async fn a_bad_url_list_is_refused_before_connecting() {
    let mut bad = crate::support::config_for_urls(" , ");
    assert!(matches!(
        ClusterStore::connect(bad.clone()).await,
        Err(StoreError::BadUrls { .. })
    ));
    bad.urls = "nats://127.0.0.1:1".to_owned();
    bad.request_timeout = Duration::from_millis(200);
    assert!(matches!(
        ClusterStore::connect(bad).await,
        Err(StoreError::Connect { .. })
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_sees_current_values_then_every_write() {
    let nats = NatsCluster::start(1).unwrap();
    let store = connect(&nats).await;
    let (one, two) = (node("one"), node("two"));
    store.announce(&one).await.unwrap();
    let mut held = Lease::acquire(&store, 2, &one).await.unwrap();

    let mut watch = store.watch_leases().await.unwrap();
    let mut next = async || next_update(&mut watch).await;
    let first = [next().await, next().await];
    assert!(first.contains(&LeaseUpdate {
        key: LeaseKey::Node("one".to_owned()),
        value: Some(one.clone()),
        revision: 1,
    }));
    assert!(first.contains(&LeaseUpdate {
        key: LeaseKey::Partition(2),
        value: Some(one.clone()),
        revision: held.revision(),
    }));

    let renewed = held.renew().await.unwrap();
    assert_eq!(
        next().await,
        LeaseUpdate {
            key: LeaseKey::Partition(2),
            value: Some(one.clone()),
            revision: renewed,
        }
    );
    held.release().await.unwrap();
    let released = next().await;
    assert_eq!(
        (released.key, released.value),
        (LeaseKey::Partition(2), None)
    );
    store.announce(&two).await.unwrap();
    assert_eq!(next().await.value, Some(two));
}
