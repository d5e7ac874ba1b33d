//! Broker core speed on one core, without HTTP: enqueue, lease+ack cycles, batch enqueue, and
//! the expiry sweep of many leases. Each group also runs a baseline in the same run (a bare
//! `VecDeque` doing the same moves) so the printed ratio means something on a noisy machine.
//!
//! `cargo bench -p queue-server --bench broker`

use std::collections::VecDeque;
use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{BatchSize, Criterion, Throughput, criterion_group};
use queue_server::broker::{NewItem, Queue, QueueConfig, Taken};

const T0: u64 = 1_800_000_000_000;

fn item(i: u64) -> NewItem {
    NewItem {
        body: format!("work-item-{i:06}").into_boxed_str(),
        key: None,
    }
}

fn cycles(c: &mut Criterion) {
    let mut g = c.benchmark_group("cycle");
    g.throughput(Throughput::Elements(1));
    g.bench_function("baseline_vecdeque_push_pop", |b| {
        let mut q: VecDeque<Box<str>> = VecDeque::new();
        let mut i = 0u64;
        b.iter(|| {
            q.push_back(item(i).body);
            i += 1;
            black_box(q.pop_front())
        })
    });
    g.bench_function("enqueue_lease_ack", |b| {
        let mut q = Queue::new(QueueConfig {
            max_attempts: 0,
            ..QueueConfig::default()
        });
        let mut i = 0u64;
        b.iter(|| {
            let now = T0 + i / 1000;
            q.enqueue(item(i), 0, now).unwrap();
            i += 1;
            let Taken::Items(mut got) = q.dequeue(1, Some(30_000), now) else {
                unreachable!()
            };
            let lease = got.pop().unwrap().lease.unwrap();
            q.ack(lease.id, now).unwrap();
        })
    });
    g.bench_function("enqueue_dequeue_kuard", |b| {
        let mut q = Queue::new(QueueConfig::default());
        let mut i = 0u64;
        b.iter(|| {
            q.enqueue(item(i), 0, T0).unwrap();
            i += 1;
            black_box(q.dequeue(1, None, T0))
        })
    });
    g.finish();

    let mut g = c.benchmark_group("batch");
    g.throughput(Throughput::Elements(1000));
    g.bench_function("baseline_vecdeque_extend_1000", |b| {
        b.iter_batched(
            || (0..1000).map(|i| item(i).body).collect::<Vec<_>>(),
            |items| {
                let mut q = VecDeque::new();
                q.extend(items);
                q
            },
            BatchSize::SmallInput,
        )
    });
    g.bench_function("enqueue_batch_1000", |b| {
        b.iter_batched(
            || (0..1000).map(item).collect::<Vec<_>>(),
            |items| {
                let mut q = Queue::new(QueueConfig::default());
                q.enqueue_batch(items, 0, T0).unwrap();
                q
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

/// Expiry of 1,000,000 leases in one sweep, against draining the same number of ready items.
fn sweep(c: &mut Criterion) {
    let mut g = c.benchmark_group("sweep_1m");
    g.sample_size(10).measurement_time(Duration::from_secs(20));
    g.throughput(Throughput::Elements(1_000_000));
    let leased = || {
        let mut q = Queue::new(QueueConfig {
            max_attempts: 0,
            ..QueueConfig::default()
        });
        q.enqueue_batch((0..1_000_000).map(item).collect(), 0, T0)
            .unwrap();
        let Taken::Items(_) = q.dequeue(1_000_000, Some(1_000), T0) else {
            unreachable!()
        };
        q
    };
    g.bench_function("baseline_drain_1m_ready", |b| {
        b.iter_batched(
            || {
                let mut q = Queue::new(QueueConfig::default());
                q.enqueue_batch((0..1_000_000).map(item).collect(), 0, T0)
                    .unwrap();
                q
            },
            |mut q| q.drain(T0),
            BatchSize::PerIteration,
        )
    });
    g.bench_function("expire_1m_leases", |b| {
        b.iter_batched(leased, |mut q| q.tick(T0 + 1_000), BatchSize::PerIteration)
    });
    g.finish();
}

/// One plain figure for the README: broker ops/s (enqueue, lease, ack count 3 ops per item).
fn summary() {
    let mut q = Queue::new(QueueConfig {
        max_attempts: 0,
        ..QueueConfig::default()
    });
    let n = 1_000_000u64;
    let started = Instant::now();
    for i in 0..n {
        q.enqueue(item(i), 0, T0).unwrap();
        let Taken::Items(mut got) = q.dequeue(1, Some(30_000), T0) else {
            unreachable!()
        };
        q.ack(got.pop().unwrap().lease.unwrap().id, T0).unwrap();
    }
    let secs = started.elapsed().as_secs_f64();
    let started = Instant::now();
    let mut base: VecDeque<Box<str>> = VecDeque::new();
    for i in 0..n {
        base.push_back(item(i).body);
        black_box(base.pop_front());
    }
    let base_secs = started.elapsed().as_secs_f64();
    println!(
        "summary: broker {:.2}M ops/s (enqueue+lease+ack = 3 ops, {:.0} ns/cycle); baseline VecDeque push+pop {:.0} ns/cycle; ratio {:.2}x baseline time",
        3.0 * n as f64 / secs / 1e6,
        secs * 1e9 / n as f64,
        base_secs * 1e9 / n as f64,
        secs / base_secs,
    );
}

criterion_group!(benches, cycles, sweep);

fn main() {
    summary();
    benches();
    Criterion::default().configure_from_args().final_summary();
}
