//! The queue rules, written once and run on every store: memory, durable (`--data-dir`), Redis
//! and a Redis Cluster of three primaries. The rules live twice in the code (the broker in Rust,
//! `store/redis/queue.lua` for Redis); this suite is what holds the two to one behaviour, at the
//! store's interface, without HTTP in between.
//!
//! Each test opens a store of its own: a temporary data directory, or a redis-server (or
//! cluster) of its own started from `PATH` ([`RedisServer`], [`RedisCluster`]). A machine
//! without redis-server fails the Redis tests; scripts/test.sh installs it.

use std::time::Duration;

use memq::QueueConfigPatch;
use queue_server::broker::{Id, NewItem};
use queue_server::error::Error;
use queue_server::store::{
    DequeueOutcome, DequeueRequest, ItemRef, LeaseSpec, RedisOptions, Store, StoreOptions,
    Whereabouts,
};
use queue_server::testing::{RedisCluster, RedisServer, eventually, unique_prefix};
use tokio_util::sync::CancellationToken;

/// A store of one test, and what must live as long as it.
struct Backend {
    store: Store,
    shutdown: CancellationToken,
    background: tokio::task::JoinHandle<()>,
    _guard: Guard,
}

#[allow(dead_code)] // held for their Drop
enum Guard {
    None,
    Dir(tempfile::TempDir),
    Redis(RedisServer),
    Cluster(RedisCluster),
}

impl Backend {
    async fn open(options: StoreOptions, guard: Guard) -> Self {
        let shutdown = CancellationToken::new();
        let store = Store::open(options, shutdown.clone()).expect("the store opens");
        let background = tokio::spawn(store.clone().run_background());
        eventually(Duration::from_secs(10), "the store is ready", || async {
            if store.is_ready().await {
                Ok(())
            } else {
                Err("not ready".to_string())
            }
        })
        .await;
        Backend {
            store,
            shutdown,
            background,
            _guard: guard,
        }
    }

    async fn memory() -> Self {
        Self::open(StoreOptions::default(), Guard::None).await
    }

    async fn durable() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let options = StoreOptions {
            data_dir: Some(dir.path().to_path_buf()),
            ..StoreOptions::default()
        };
        Self::open(options, Guard::Dir(dir)).await
    }

    async fn redis() -> Self {
        let redis = RedisServer::start(&[]).await;
        let options = StoreOptions {
            redis: Some(RedisOptions {
                url: redis.url(),
                cluster: false,
                prefix: unique_prefix(),
            }),
            ..StoreOptions::default()
        };
        Self::open(options, Guard::Redis(redis)).await
    }

    async fn redis_cluster() -> Self {
        let cluster = RedisCluster::start(3).await;
        let options = StoreOptions {
            redis: Some(RedisOptions {
                url: cluster.urls(),
                cluster: true,
                prefix: unique_prefix(),
            }),
            ..StoreOptions::default()
        };
        Self::open(options, Guard::Cluster(cluster)).await
    }

    async fn close(self) {
        self.shutdown.cancel();
        let _ = self.background.await;
        self.store.close().await;
    }
}

/// Runs each rule on each store: `memory::fifo`, `durable::fifo`, `redis::fifo`,
/// `redis_cluster::fifo`, ...
macro_rules! on_every_store {
    ($($rule:ident),* $(,)?) => {
        on_every_store!(@store memory: $($rule),*);
        on_every_store!(@store durable: $($rule),*);
        on_every_store!(@store redis: $($rule),*);
        on_every_store!(@store redis_cluster: $($rule),*);
    };
    (@store $backend:ident: $($rule:ident),*) => {
        mod $backend {
            $(
                #[tokio::test]
                async fn $rule() {
                    let backend = super::Backend::$backend().await;
                    super::$rule(&backend.store).await;
                    backend.close().await;
                }
            )*
        }
    };
}

on_every_store!(
    items_come_out_in_the_order_they_went_in,
    a_kuard_dequeue_takes_the_item_for_good,
    expired_leases_go_back_to_the_front_in_their_order,
    nacked_items_go_back_to_the_front_or_after_their_delay,
    items_out_of_attempts_become_dead_letters_until_requeued_or_purged,
    a_dedup_key_gives_the_first_item_back_within_the_window,
    delayed_items_wait_their_turn,
    a_paused_queue_hands_out_nothing_and_takes_work,
    max_depth_refuses_a_batch_that_would_pass_it_whole,
    drain_removes_the_ready_items_and_leaves_the_leased,
    deleting_a_queue_voids_its_leases,
    stats_count_every_hand_out_ack_requeue_and_death,
    acks_answer_lease_by_lease,
    batch_nacks_give_items_back_in_the_order_given,
    released_items_go_back_to_the_front_with_their_attempt_not_counted,
    batch_extends_move_each_deadline,
    extend_moves_a_lease_deadline,
    a_missing_queue_is_an_error_and_create_says_whether_it_created,
    a_long_poll_wakes_for_an_enqueue,
    concurrent_enqueues_each_get_their_own_answer,
    the_lease_list_shows_who_holds_which_item_oldest_first,
    an_item_is_found_where_it_is_by_id_or_key,
);

// ---------------------------------------------------------------------------------------------
// Helpers

/// A well-formed lease id no store handed out.
const UNKNOWN_LEASE: &str = "01ARZ3NDEKTSV4RRFFQ69G5FAV";

fn items(bodies: &[&str]) -> Vec<NewItem> {
    bodies
        .iter()
        .map(|b| NewItem {
            body: (*b).into(),
            key: None,
        })
        .collect()
}

fn keyed(body: &str, key: &str) -> Vec<NewItem> {
    vec![NewItem {
        body: body.into(),
        key: Some(key.into()),
    }]
}

async fn create(store: &Store, q: &str, patch: QueueConfigPatch) {
    store.create_queue(q, Some(&patch)).await.unwrap();
}

/// What a dequeue handed out: (body, lease id, attempt), or the empty queue's counts.
#[derive(Debug, PartialEq)]
enum Out {
    Items(Vec<(String, Option<Id>, u32)>),
    Empty {
        depth: u64,
        inflight: u64,
        delayed: u64,
        paused: bool,
    },
}

impl Out {
    fn bodies(&self) -> Vec<&str> {
        match self {
            Out::Items(items) => items.iter().map(|(b, ..)| b.as_str()).collect(),
            Out::Empty { .. } => Vec::new(),
        }
    }

    fn attempts(&self) -> Vec<u32> {
        match self {
            Out::Items(items) => items.iter().map(|(_, _, a)| *a).collect(),
            Out::Empty { .. } => Vec::new(),
        }
    }

    /// The lease ids, as a request names them.
    fn leases(&self) -> Vec<String> {
        match self {
            Out::Items(items) => items
                .iter()
                .map(|(_, l, _)| l.expect("leased").to_string())
                .collect(),
            Out::Empty { .. } => Vec::new(),
        }
    }
}

async fn take(store: &Store, q: &str, max: usize, lease: LeaseSpec, wait: Duration) -> Out {
    let req = DequeueRequest {
        max,
        lease,
        wait,
        consumer: None,
    };
    match store.dequeue(q, req).await.unwrap() {
        DequeueOutcome::Items(items) => Out::Items(
            items
                .into_iter()
                .map(|d| {
                    let attempt = d.lease.map_or(0, |l| l.attempt);
                    (d.body.into(), d.lease.map(|l| l.id), attempt)
                })
                .collect(),
        ),
        DequeueOutcome::Empty {
            depth,
            inflight,
            delayed,
            paused,
        } => Out::Empty {
            depth,
            inflight,
            delayed,
            paused,
        },
    }
}

/// Leases up to `max` items for the queue's lease length, without waiting.
async fn lease(store: &Store, q: &str, max: usize) -> Out {
    take(store, q, max, LeaseSpec::QueueDefault, Duration::ZERO).await
}

/// (depth, inflight, delayed, dead) of a queue.
async fn counts(store: &Store, q: &str) -> (u64, u64, u64, u64) {
    let s = store.queue(q).await.unwrap();
    (s.depth, s.inflight, s.delayed, s.dead)
}

/// Waits (at most 10 s) until the ready items are `want`, in that order, then leases them.
async fn lease_eventually(store: &Store, q: &str, want: &[&str]) -> Out {
    eventually(Duration::from_secs(10), "the items are ready", || async {
        let ready: Vec<String> = store
            .peek(q, 100)
            .await
            .map_err(|e| e.to_string())?
            .into_iter()
            .map(|(_, b)| b.into())
            .collect();
        if ready == want {
            Ok(())
        } else {
            Err(format!("ready: {ready:?}"))
        }
    })
    .await;
    let out = lease(store, q, want.len()).await;
    assert_eq!(out.bodies(), want);
    out
}

// ---------------------------------------------------------------------------------------------
// The rules

async fn items_come_out_in_the_order_they_went_in(store: &Store) {
    store.create_queue("q", None).await.unwrap();
    store
        .enqueue("q", items(&["a", "b", "c"]), 0)
        .await
        .unwrap();
    store.enqueue("q", items(&["d"]), 0).await.unwrap();
    let peeked: Vec<String> = store
        .peek("q", 10)
        .await
        .unwrap()
        .into_iter()
        .map(|(_, b)| b.into())
        .collect();
    assert_eq!(peeked, ["a", "b", "c", "d"]);
    assert_eq!(lease(store, "q", 2).await.bodies(), ["a", "b"]);
    assert_eq!(lease(store, "q", 10).await.bodies(), ["c", "d"]);
    assert_eq!(counts(store, "q").await, (0, 4, 0, 0));
}

async fn a_kuard_dequeue_takes_the_item_for_good(store: &Store) {
    store.create_queue("q", None).await.unwrap();
    store.enqueue("q", items(&["x", "y"]), 0).await.unwrap();
    let out = take(store, "q", 1, LeaseSpec::None, Duration::ZERO).await;
    assert_eq!(out, Out::Items(vec![("x".into(), None, 0)]));
    assert_eq!(counts(store, "q").await, (1, 0, 0, 0));
    let stats = store.queue("q").await.unwrap();
    assert_eq!((stats.enqueued, stats.dequeued), (2, 1));
}

async fn expired_leases_go_back_to_the_front_in_their_order(store: &Store) {
    store.create_queue("q", None).await.unwrap();
    store
        .enqueue("q", items(&["a", "b", "c"]), 0)
        .await
        .unwrap();
    let first = take(store, "q", 2, LeaseSpec::Millis(300), Duration::ZERO).await;
    assert_eq!(first.bodies(), ["a", "b"]);
    assert_eq!(first.attempts(), [1, 1]);
    let again = lease_eventually(store, "q", &["a", "b", "c"]).await;
    assert_eq!(again.attempts(), [2, 2, 1]);
    let old = first.leases();
    assert!(
        matches!(
            store.ack("q", &old[0]).await,
            Err(Error::LeaseExpired(_) | Error::LeaseNotFound(_))
        ),
        "an expired lease cannot ack"
    );
    for l in again.leases() {
        store.ack("q", &l).await.unwrap();
    }
    assert_eq!(counts(store, "q").await, (0, 0, 0, 0));
}

async fn nacked_items_go_back_to_the_front_or_after_their_delay(store: &Store) {
    store.create_queue("q", None).await.unwrap();
    store
        .enqueue("q", items(&["a", "b", "c", "d"]), 0)
        .await
        .unwrap();
    let out = lease(store, "q", 3).await;
    let l = out.leases();
    store.nack("q", &l[1], 0).await.unwrap();
    store.nack("q", &l[0], 0).await.unwrap();
    store.nack("q", &l[2], 200).await.unwrap();
    assert_eq!(counts(store, "q").await, (3, 0, 1, 0));
    let back = lease(store, "q", 10).await;
    assert_eq!(back.bodies(), ["a", "b", "d"]);
    assert_eq!(back.attempts(), [2, 2, 1]);
    let late = lease_eventually(store, "q", &["c"]).await;
    assert_eq!(late.attempts(), [2]);
    assert!(matches!(
        store.nack("q", &l[0], 0).await,
        Err(Error::LeaseNotFound(_))
    ));
    let stats = store.queue("q").await.unwrap();
    assert_eq!(stats.requeued, 3);
}

async fn items_out_of_attempts_become_dead_letters_until_requeued_or_purged(store: &Store) {
    create(
        store,
        "q",
        QueueConfigPatch {
            max_attempts: Some(2),
            ..Default::default()
        },
    )
    .await;
    store.enqueue("q", items(&["x", "y"]), 0).await.unwrap();
    for attempt in 1..=2 {
        let out = lease(store, "q", 1).await;
        assert_eq!(out.bodies(), ["x"]);
        assert_eq!(out.attempts(), [attempt]);
        store.nack("q", &out.leases()[0], 0).await.unwrap();
    }
    assert_eq!(counts(store, "q").await, (1, 0, 0, 1));
    let dead = store.dead_letters("q", 10).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!((&*dead[0].body, dead[0].attempts), ("x", 2));
    assert_eq!(store.requeue_dead("q").await.unwrap(), 1);
    assert_eq!(counts(store, "q").await, (2, 0, 0, 0));
    // Back at the end of the queue, with a fresh count of attempts.
    let out = lease(store, "q", 2).await;
    assert_eq!(out.bodies(), ["y", "x"]);
    assert_eq!(out.attempts(), [1, 1]);
    for l in out.leases() {
        store.nack("q", &l, 0).await.unwrap();
    }
    for l in lease(store, "q", 2).await.leases() {
        store.nack("q", &l, 0).await.unwrap();
    }
    assert_eq!(counts(store, "q").await, (0, 0, 0, 2));
    assert_eq!(store.purge_dead("q").await.unwrap(), 2);
    assert_eq!(counts(store, "q").await, (0, 0, 0, 0));
    assert!(store.dead_letters("q", 10).await.unwrap().is_empty());
}

async fn a_dedup_key_gives_the_first_item_back_within_the_window(store: &Store) {
    store.create_queue("q", None).await.unwrap();
    let first = store.enqueue("q", keyed("one", "k"), 0).await.unwrap();
    assert!(!first[0].1, "the first enqueue of a key is new");
    let again = store.enqueue("q", keyed("two", "k"), 0).await.unwrap();
    assert_eq!(again[0], (first[0].0, true));
    assert_eq!(counts(store, "q").await, (1, 0, 0, 0));
    // A batch with the key twice, and a new one: one item each.
    let batch = vec![
        NewItem {
            body: "three".into(),
            key: Some("k2".into()),
        },
        NewItem {
            body: "four".into(),
            key: Some("k2".into()),
        },
    ];
    let added = store.enqueue("q", batch, 0).await.unwrap();
    assert_eq!(added[1], (added[0].0, true));
    assert!(!added[0].1);
    // Acked, the key still stands for the item within the window.
    for l in lease(store, "q", 10).await.leases() {
        store.ack("q", &l).await.unwrap();
    }
    let after = store.enqueue("q", keyed("five", "k"), 0).await.unwrap();
    assert_eq!(after[0], (first[0].0, true));
    assert_eq!(counts(store, "q").await, (0, 0, 0, 0));
    assert_eq!(store.queue("q").await.unwrap().enqueued, 2);
}

async fn delayed_items_wait_their_turn(store: &Store) {
    store.create_queue("q", None).await.unwrap();
    store.enqueue("q", items(&["later"]), 300).await.unwrap();
    store.enqueue("q", items(&["now"]), 0).await.unwrap();
    assert_eq!(counts(store, "q").await, (1, 0, 1, 0));
    assert_eq!(lease(store, "q", 10).await.bodies(), ["now"]);
    assert_eq!(
        lease(store, "q", 10).await,
        Out::Empty {
            depth: 0,
            inflight: 1,
            delayed: 1,
            paused: false
        }
    );
    lease_eventually(store, "q", &["later"]).await;
}

async fn a_paused_queue_hands_out_nothing_and_takes_work(store: &Store) {
    store.create_queue("q", None).await.unwrap();
    store.enqueue("q", items(&["a"]), 0).await.unwrap();
    assert!(store.set_paused("q", true).await.unwrap().paused);
    store.enqueue("q", items(&["b"]), 0).await.unwrap();
    // A paused queue answers a long poll at once rather than holding it.
    let out = take(
        store,
        "q",
        1,
        LeaseSpec::QueueDefault,
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(
        out,
        Out::Empty {
            depth: 2,
            inflight: 0,
            delayed: 0,
            paused: true
        }
    );
    assert!(!store.set_paused("q", false).await.unwrap().paused);
    assert_eq!(lease(store, "q", 10).await.bodies(), ["a", "b"]);
}

async fn max_depth_refuses_a_batch_that_would_pass_it_whole(store: &Store) {
    create(
        store,
        "q",
        QueueConfigPatch {
            max_depth: Some(2),
            ..Default::default()
        },
    )
    .await;
    let err = store
        .enqueue("q", items(&["a", "b", "c"]), 0)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::QueueFull(_)), "{err:?}");
    assert_eq!(counts(store, "q").await, (0, 0, 0, 0), "all or none");
    store.enqueue("q", items(&["a"]), 0).await.unwrap();
    store.enqueue("q", items(&["b"]), 500).await.unwrap();
    // Delayed items count; leased ones do not.
    let err = store.enqueue("q", items(&["c"]), 0).await.unwrap_err();
    assert!(matches!(err, Error::QueueFull(_)), "{err:?}");
    lease(store, "q", 1).await;
    store.enqueue("q", items(&["c"]), 0).await.unwrap();
    assert_eq!(counts(store, "q").await, (1, 1, 1, 0));
}

async fn drain_removes_the_ready_items_and_leaves_the_leased(store: &Store) {
    store.create_queue("q", None).await.unwrap();
    store
        .enqueue("q", items(&["a", "b", "c", "d"]), 0)
        .await
        .unwrap();
    store.enqueue("q", items(&["late"]), 60_000).await.unwrap();
    let held = lease(store, "q", 1).await;
    let stats = store.drain("q").await.unwrap();
    assert_eq!(stats.depth, 0);
    assert_eq!(stats.inflight, 1);
    let stats = store.queue("q").await.unwrap();
    assert_eq!(
        (stats.depth, stats.inflight, stats.delayed, stats.drained),
        (0, 1, 0, 4)
    );
    store.ack("q", &held.leases()[0]).await.unwrap();
}

async fn deleting_a_queue_voids_its_leases(store: &Store) {
    store.create_queue("q", None).await.unwrap();
    store.enqueue("q", items(&["a", "b"]), 0).await.unwrap();
    let held = lease(store, "q", 1).await;
    let gone = store.delete_queue("q").await.unwrap();
    assert_eq!((gone.depth, gone.inflight), (1, 1));
    assert!(matches!(
        store.queue("q").await,
        Err(Error::QueueNotFound(_))
    ));
    let (_, created) = store.create_queue("q", None).await.unwrap();
    assert!(created);
    assert!(matches!(
        store.ack("q", &held.leases()[0]).await,
        Err(Error::LeaseNotFound(_))
    ));
    let fresh = store.queue("q").await.unwrap();
    assert_eq!((fresh.depth, fresh.enqueued, fresh.inflight), (0, 0, 0));
}

async fn stats_count_every_hand_out_ack_requeue_and_death(store: &Store) {
    create(
        store,
        "q",
        QueueConfigPatch {
            max_attempts: Some(1),
            lease_seconds: Some(120),
            ..Default::default()
        },
    )
    .await;
    store
        .enqueue("q", items(&["a", "b", "c", "d", "e"]), 0)
        .await
        .unwrap();
    let out = lease(store, "q", 3).await;
    let l = out.leases();
    store.ack("q", &l[0]).await.unwrap();
    store.nack("q", &l[1], 0).await.unwrap(); // out of attempts: dead
    take(store, "q", 1, LeaseSpec::None, Duration::ZERO).await;
    store.drain("q").await.unwrap();
    let s = store.queue("q").await.unwrap();
    assert_eq!(s.name, "q");
    assert_eq!(
        (
            s.enqueued, s.dequeued, s.acked, s.requeued, s.dead, s.drained, s.depth, s.inflight
        ),
        (5, 4, 1, 0, 1, 1, 0, 1)
    );
    assert_eq!((s.lease_seconds, s.max_attempts, s.max_depth), (120, 1, 0));
    assert!(!s.paused);
    store.create_queue("another", None).await.unwrap();
    let all = store.stats().await.unwrap();
    let names: Vec<&str> = all.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["another", "q"], "sorted by name");
}

async fn acks_answer_lease_by_lease(store: &Store) {
    store.create_queue("q", None).await.unwrap();
    store.enqueue("q", items(&["a", "b"]), 0).await.unwrap();
    let l = lease(store, "q", 2).await.leases();
    let leases = [
        l[0].clone(),
        "not-a-lease".to_string(),
        l[1].clone(),
        l[0].clone(),
        UNKNOWN_LEASE.to_string(),
    ];
    let results = store.ack_many("q", &leases).await.unwrap();
    let kinds: Vec<&str> = results
        .iter()
        .map(|r| match r {
            Ok(()) => "acked",
            Err(Error::LeaseNotFound(_)) => "not found",
            Err(_) => "other",
        })
        .collect();
    assert_eq!(
        kinds,
        ["acked", "not found", "acked", "not found", "not found"]
    );
    assert!(matches!(
        store.ack("q", "not-a-lease").await,
        Err(Error::LeaseNotFound(_))
    ));
    let s = store.queue("q").await.unwrap();
    assert_eq!((s.acked, s.inflight), (2, 0));
}

/// "done", "not found", "expired" or "other" per result of a batch.
fn kinds<T>(results: &[Result<T, Error>]) -> Vec<&'static str> {
    results
        .iter()
        .map(|r| match r {
            Ok(_) => "done",
            Err(Error::LeaseNotFound(_)) => "not found",
            Err(Error::LeaseExpired(_)) => "expired",
            Err(_) => "other",
        })
        .collect()
}

async fn batch_nacks_give_items_back_in_the_order_given(store: &Store) {
    store.create_queue("q", None).await.unwrap();
    store
        .enqueue("q", items(&["a", "b", "c", "d", "e"]), 0)
        .await
        .unwrap();
    let l = lease(store, "q", 4).await.leases();
    let batch = [
        l[1].clone(),
        l[0].clone(),
        "not-a-lease".to_string(),
        UNKNOWN_LEASE.to_string(),
        l[1].clone(),
    ];
    let results = store.nack_many("q", &batch, 0).await.unwrap();
    assert_eq!(
        kinds(&results),
        ["done", "done", "not found", "not found", "not found"]
    );
    // Back at the front in the order given, ahead of the item never taken.
    assert_eq!(counts(store, "q").await, (3, 2, 0, 0));
    let back = lease(store, "q", 3).await;
    assert_eq!(back.bodies(), ["b", "a", "e"]);
    assert_eq!(back.attempts(), [2, 2, 1]);
    // With a delay they wait, then come back.
    let later = [l[2].clone(), l[3].clone()];
    let results = store.nack_many("q", &later, 200).await.unwrap();
    assert_eq!(kinds(&results), ["done", "done"]);
    assert_eq!(counts(store, "q").await, (0, 3, 2, 0));
    let late = lease_eventually(store, "q", &["c", "d"]).await;
    assert_eq!(late.attempts(), [2, 2]);
    let s = store.queue("q").await.unwrap();
    assert_eq!((s.requeued, s.inflight), (4, 5));
    assert!(matches!(
        store.nack_many("nope", &later, 0).await,
        Err(Error::QueueNotFound(_))
    ));
}

async fn released_items_go_back_to_the_front_with_their_attempt_not_counted(store: &Store) {
    // One attempt only: a nack would make dead letters; a release does not.
    create(
        store,
        "q",
        QueueConfigPatch {
            max_attempts: Some(1),
            ..Default::default()
        },
    )
    .await;
    store
        .enqueue("q", items(&["a", "b", "c"]), 0)
        .await
        .unwrap();
    let first = lease(store, "q", 2).await;
    assert_eq!(first.attempts(), [1, 1]);
    let l = first.leases();
    let batch = [l[0].clone(), l[1].clone(), UNKNOWN_LEASE.to_string()];
    let results = store.release("q", &batch).await.unwrap();
    assert_eq!(kinds(&results), ["done", "done", "not found"]);
    assert_eq!(counts(store, "q").await, (3, 0, 0, 0));
    // A released lease is over: it can be neither acked nor released again.
    assert!(matches!(
        store.ack("q", &l[0]).await,
        Err(Error::LeaseNotFound(_))
    ));
    assert_eq!(
        kinds(&store.release("q", &l[..1]).await.unwrap()),
        ["not found"]
    );
    let again = lease(store, "q", 3).await;
    assert_eq!(again.bodies(), ["a", "b", "c"]);
    assert_eq!(
        again.attempts(),
        [1, 1, 1],
        "the released delivery is not counted"
    );
    let s = store.queue("q").await.unwrap();
    assert_eq!((s.requeued, s.dequeued, s.dead), (2, 5, 0));
    for lease in again.leases() {
        store.ack("q", &lease).await.unwrap();
    }
    assert_eq!(counts(store, "q").await, (0, 0, 0, 0));
}

async fn batch_extends_move_each_deadline(store: &Store) {
    create(
        store,
        "q",
        QueueConfigPatch {
            lease_seconds: Some(7),
            ..Default::default()
        },
    )
    .await;
    store.enqueue("q", items(&["a", "b"]), 0).await.unwrap();
    let req = DequeueRequest {
        max: 2,
        lease: LeaseSpec::Millis(300),
        wait: Duration::ZERO,
        consumer: None,
    };
    let DequeueOutcome::Items(got) = store.dequeue("q", req).await.unwrap() else {
        panic!("items")
    };
    let l: Vec<String> = got
        .iter()
        .map(|d| d.lease.expect("leased").id.to_string())
        .collect();
    let before = got[0].lease.unwrap().deadline;
    let batch = [
        l[0].clone(),
        "not-a-lease".to_string(),
        l[1].clone(),
        UNKNOWN_LEASE.to_string(),
    ];
    let results = store.extend_many("q", &batch, Some(60_000)).await.unwrap();
    assert_eq!(kinds(&results), ["done", "not found", "done", "not found"]);
    let deadlines: Vec<u64> = results
        .iter()
        .filter_map(|r| r.as_ref().ok().copied())
        .collect();
    for d in &deadlines {
        assert!(*d >= before + 50_000, "{before} then {d}");
    }
    // The leases run to their new deadlines: what the lease list shows.
    let held: Vec<u64> = store
        .leases("q", 10)
        .await
        .unwrap()
        .iter()
        .map(|h| h.deadline)
        .collect();
    assert_eq!(held, deadlines);
    // Without a length, the queue's own (7 s) from now.
    let results = store.extend_many("q", &l, None).await.unwrap();
    for r in &results {
        let d = *r.as_ref().expect("extended");
        assert!(
            d >= before + 6_000 && d < before + 50_000,
            "{before} then {d}"
        );
    }
    for lease in &l {
        store.ack("q", lease).await.unwrap();
    }
    assert_eq!(
        kinds(&store.extend_many("q", &l, None).await.unwrap()),
        ["not found", "not found"]
    );
}

async fn extend_moves_a_lease_deadline(store: &Store) {
    store.create_queue("q", None).await.unwrap();
    store.enqueue("q", items(&["a"]), 0).await.unwrap();
    let req = DequeueRequest {
        max: 1,
        lease: LeaseSpec::Millis(300),
        wait: Duration::ZERO,
        consumer: None,
    };
    let DequeueOutcome::Items(got) = store.dequeue("q", req).await.unwrap() else {
        panic!("an item")
    };
    let first = got[0].lease.expect("leased");
    let (info, id, body) = store
        .extend("q", &first.id.to_string(), Some(60_000))
        .await
        .unwrap();
    assert_eq!(
        (info.id, id, &*body, info.attempt),
        (first.id, got[0].id, "a", 1)
    );
    assert!(
        info.deadline >= first.deadline + 50_000,
        "{} then {}",
        first.deadline,
        info.deadline
    );
    assert!(matches!(
        store.extend("q", UNKNOWN_LEASE, None).await,
        Err(Error::LeaseNotFound(_))
    ));
    store.ack("q", &first.id.to_string()).await.unwrap();
}

async fn a_missing_queue_is_an_error_and_create_says_whether_it_created(store: &Store) {
    let missing = |r: Result<_, Error>| matches!(r, Err(Error::QueueNotFound(_)));
    assert!(missing(store.queue("nope").await.map(|_| ())));
    assert!(missing(
        store.enqueue("nope", items(&["x"]), 0).await.map(|_| ())
    ));
    assert!(missing(store.drain("nope").await.map(|_| ())));
    assert!(missing(store.delete_queue("nope").await.map(|_| ())));
    assert!(missing(
        store
            .dequeue(
                "nope",
                DequeueRequest {
                    max: 1,
                    lease: LeaseSpec::QueueDefault,
                    wait: Duration::ZERO,
                    consumer: None,
                }
            )
            .await
            .map(|_| ())
    ));
    let (_, created) = store.create_queue("q", None).await.unwrap();
    assert!(created);
    let patch = QueueConfigPatch {
        lease_seconds: Some(7),
        ..Default::default()
    };
    let (stats, created) = store.create_queue("q", Some(&patch)).await.unwrap();
    assert!(!created, "a second PUT changes the config");
    assert_eq!(stats.lease_seconds, 7);
    let bad = QueueConfigPatch {
        lease_seconds: Some(0),
        ..Default::default()
    };
    assert!(matches!(
        store.create_queue("q", Some(&bad)).await,
        Err(Error::InvalidJson(_))
    ));
    assert_eq!(store.queue("q").await.unwrap().lease_seconds, 7);
}

async fn a_long_poll_wakes_for_an_enqueue(store: &Store) {
    store.create_queue("q", None).await.unwrap();
    let poll = {
        let store = store.clone();
        tokio::spawn(async move {
            take(
                &store,
                "q",
                1,
                LeaseSpec::QueueDefault,
                Duration::from_secs(30),
            )
            .await
        })
    };
    eventually(Duration::from_secs(10), "the poll waits", || async {
        match store.waiting_polls() {
            1 => Ok(()),
            n => Err(format!("{n} waiting")),
        }
    })
    .await;
    let started = std::time::Instant::now();
    store.enqueue("q", items(&["work"]), 0).await.unwrap();
    let out = poll.await.unwrap();
    assert_eq!(out.bodies(), ["work"]);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "woken by the enqueue, not by the end of its wait"
    );
}

/// 40 keyed requests (20 keys, each twice) and 40 plain ones at once on a queue with room for
/// 50: whatever the order, exactly 50 items are added, the second request of a key added first
/// is a duplicate that names the first one's item, and every other request is refused whole.
async fn concurrent_enqueues_each_get_their_own_answer(store: &Store) {
    create(
        store,
        "q",
        QueueConfigPatch {
            max_depth: Some(50),
            ..Default::default()
        },
    )
    .await;
    let mut tasks = Vec::new();
    for i in 0..80 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let items = if i < 40 {
                keyed(&format!("keyed-{i}"), &format!("k{}", i % 20))
            } else {
                items(&[&format!("plain-{i}")])
            };
            (i, store.enqueue("q", items, 0).await)
        }));
    }
    let mut added = Vec::new();
    let mut dups = Vec::new();
    let mut full = 0;
    for task in tasks {
        match task.await.unwrap() {
            (i, Ok(answer)) if answer[0].1 => dups.push((i, answer[0].0)),
            (i, Ok(answer)) => added.push((i, answer[0].0)),
            (_, Err(Error::QueueFull(_))) => full += 1,
            (i, Err(e)) => panic!("request {i}: {e}"),
        }
    }
    assert_eq!(added.len(), 50, "added {added:?}");
    assert_eq!(added.len() + dups.len() + full, 80);
    for (i, holder) in &dups {
        let partner = if *i < 20 { i + 20 } else { i - 20 };
        let first = added.iter().find(|(j, _)| *j == partner).map(|(_, id)| *id);
        assert_eq!(first, Some(*holder), "request {i} names its key's item");
    }
    assert_eq!(counts(store, "q").await, (50, 0, 0, 0));
    assert_eq!(store.queue("q").await.unwrap().enqueued, 50);
}

async fn the_lease_list_shows_who_holds_which_item_oldest_first(store: &Store) {
    store.create_queue("q", None).await.unwrap();
    store
        .enqueue("q", items(&["a", "b", "c", "d"]), 0)
        .await
        .unwrap();
    let named = |max, consumer: Option<&str>, lease_ms| DequeueRequest {
        max,
        lease: LeaseSpec::Millis(lease_ms),
        wait: Duration::ZERO,
        consumer: consumer.map(Into::into),
    };
    let take = async |req| match store.dequeue("q", req).await.unwrap() {
        DequeueOutcome::Items(items) => items,
        other => panic!("{other:?}"),
    };
    let first = take(named(2, Some("pod-a"), 60_000)).await;
    let second = take(named(1, None, 60_000)).await;
    // Ends soon: gone from the list once it ran out (the item goes back to the front).
    let short = take(named(1, Some("pod-c"), 300)).await;

    let held = store.leases("q", 100).await.unwrap();
    let seen: Vec<(Id, Id, u32, Option<&str>)> = held
        .iter()
        .map(|l| (l.id, l.item, l.attempt, l.consumer.as_deref()))
        .collect();
    let lease = |d: &queue_server::store::Delivery| d.lease.expect("leased").id;
    assert_eq!(
        seen,
        [
            (lease(&first[0]), first[0].id, 1, Some("pod-a")),
            (lease(&first[1]), first[1].id, 1, Some("pod-a")),
            (lease(&second[0]), second[0].id, 1, None),
            (lease(&short[0]), short[0].id, 1, Some("pod-c")),
        ]
    );
    assert_eq!(held[0].deadline, first[0].lease.unwrap().deadline);
    // Two named consumers hold leases (the anonymous one is not counted).
    assert_eq!(store.queue("q").await.unwrap().consumers, 2);
    // A limit keeps the leases that run out soonest (still listed oldest first).
    assert_eq!(store.leases("q", 1).await.unwrap(), held[3..]);

    // Acked, nacked and expired leases leave the list; an extended one stays, with its holder.
    store.ack("q", &lease(&first[0]).to_string()).await.unwrap();
    store
        .nack("q", &lease(&second[0]).to_string(), 0)
        .await
        .unwrap();
    store
        .extend("q", &lease(&first[1]).to_string(), Some(120_000))
        .await
        .unwrap();
    eventually(
        Duration::from_secs(10),
        "the short lease ran out",
        || async {
            let held = store.leases("q", 100).await.unwrap();
            let ids: Vec<Id> = held.iter().map(|l| l.id).collect();
            if ids == [lease(&first[1])] {
                Ok(())
            } else {
                Err(format!("{held:?}"))
            }
        },
    )
    .await;
    let held = store.leases("q", 100).await.unwrap();
    assert_eq!(held[0].consumer.as_deref(), Some("pod-a"));
    assert_eq!(store.queue("q").await.unwrap().consumers, 1);
    assert!(held[0].deadline >= first[1].lease.unwrap().deadline + 50_000);
    // The item that came back is taken again: its second delivery, by someone else.
    let again = take(named(1, Some("pod-d"), 60_000)).await;
    let held = store.leases("q", 100).await.unwrap();
    let last = held.last().unwrap();
    assert_eq!(
        (last.item, last.consumer.as_deref()),
        (again[0].id, Some("pod-d"))
    );
    assert!(matches!(
        store.leases("nope", 10).await,
        Err(Error::QueueNotFound(_))
    ));
}

async fn an_item_is_found_where_it_is_by_id_or_key(store: &Store) {
    create(
        store,
        "q",
        QueueConfigPatch {
            max_attempts: Some(1),
            ..Default::default()
        },
    )
    .await;
    let ids: Vec<Id> = store
        .enqueue("q", items(&["a", "b", "c"]), 0)
        .await
        .unwrap()
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    let (keyed_id, _) = store.enqueue("q", keyed("d", "order-7"), 0).await.unwrap()[0];
    let (later, _) = store.enqueue("q", items(&["e"]), 60_000).await.unwrap()[0];
    let find = async |item: ItemRef<'_>| store.find_item("q", item).await;
    let by_id = async |id: Id| find(ItemRef::Id(&id.to_string())).await.unwrap();

    for (i, id) in ids.iter().enumerate() {
        let found = by_id(*id).await;
        assert_eq!(
            (found.id, found.attempts, found.state),
            (*id, 0, Whereabouts::Ready { position: i as u64 })
        );
    }
    let found = find(ItemRef::Key("order-7")).await.unwrap();
    assert_eq!(
        (found.id, found.state),
        (keyed_id, Whereabouts::Ready { position: 3 })
    );
    let Whereabouts::Delayed { at } = by_id(later).await.state else {
        panic!("delayed")
    };
    assert!(at >= later.timestamp_ms() + 59_000, "{at}");

    // a is leased (by someone who said who), b goes to the dead letters (1 attempt), c moves up.
    let req = DequeueRequest {
        max: 2,
        lease: LeaseSpec::Millis(60_000),
        wait: Duration::ZERO,
        consumer: Some("pod-a".into()),
    };
    let DequeueOutcome::Items(got) = store.dequeue("q", req).await.unwrap() else {
        panic!("items")
    };
    store
        .nack("q", &got[1].lease.unwrap().id.to_string(), 0)
        .await
        .unwrap();
    let Whereabouts::Leased(held) = by_id(ids[0]).await.state else {
        panic!("leased")
    };
    assert_eq!(
        (held.id, held.attempt, held.consumer.as_deref()),
        (got[0].lease.unwrap().id, 1, Some("pod-a"))
    );
    let dead = by_id(ids[1]).await;
    assert!(matches!(dead.state, Whereabouts::Dead { .. }), "{dead:?}");
    assert_eq!(dead.attempts, 1);
    assert_eq!(
        by_id(ids[2]).await.state,
        Whereabouts::Ready { position: 0 }
    );

    // Gone once acked; its key too (the key stays taken, but no item is there).
    store
        .ack("q", &got[0].lease.unwrap().id.to_string())
        .await
        .unwrap();
    let gone = |r: Result<_, Error>| matches!(r, Err(Error::ItemNotFound(_)));
    assert!(gone(find(ItemRef::Id(&ids[0].to_string())).await));
    assert!(gone(find(ItemRef::Key("never-used")).await));
    assert!(gone(find(ItemRef::Id(UNKNOWN_LEASE)).await));
    store.drain("q").await.unwrap();
    assert!(gone(find(ItemRef::Key("order-7")).await));
    assert!(matches!(
        store.find_item("nope", ItemRef::Id(UNKNOWN_LEASE)).await,
        Err(Error::QueueNotFound(_))
    ));
}
