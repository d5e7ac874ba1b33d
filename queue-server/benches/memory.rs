//! Memory per queued item: RSS growth for 1,000,000 items of 16 bytes in a broker queue, against
//! a baseline of the same bodies alone in a `VecDeque<Box<str>>`, measured in the same run.
//! Each side runs in a fresh child process so neither reuses memory the other freed.
//!
//! `cargo bench -p queue-server --bench memory`

use std::collections::VecDeque;
use std::hint::black_box;
use std::process::Command;

use queue_server::broker::{NewItem, Queue, QueueConfig};

const N: usize = 1_000_000;
const BODY: usize = 16;
const T0: u64 = 1_800_000_000_000;

fn rss_bytes() -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("Linux /proc/self/statm");
    let resident: usize = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    resident * 4096
}

fn body(i: usize) -> Box<str> {
    format!("{i:0BODY$}").into_boxed_str()
}

/// Bytes of RSS per item that filling `side` adds, read while the items are still held.
fn measure(side: &str) -> f64 {
    let before = rss_bytes();
    let after = match side {
        "baseline" => {
            let mut bare: VecDeque<Box<str>> = VecDeque::new();
            for i in 0..N {
                bare.push_back(body(i));
            }
            black_box(&bare);
            rss_bytes()
        }
        "queue" => {
            let mut q = Queue::new(QueueConfig::default());
            for start in (0..N).step_by(10_000) {
                let items = (start..start + 10_000)
                    .map(|i| NewItem {
                        body: body(i),
                        key: None,
                    })
                    .collect();
                q.enqueue_batch(items, 0, T0).unwrap();
            }
            black_box(&q);
            rss_bytes()
        }
        other => panic!("unknown side {other}"),
    };
    (after - before) as f64 / N as f64
}

fn child(side: &str) -> f64 {
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["--measure", side])
        .output()
        .expect("run the measuring child");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(pos) = args.iter().position(|a| a == "--measure") {
        println!("{}", measure(&args[pos + 1]));
        return;
    }
    // `cargo test --benches` runs this without --bench: nothing to measure then.
    if !args.iter().any(|a| a == "--bench") {
        return;
    }
    let baseline = child("baseline");
    let queue = child("queue");
    println!(
        "memory: {N} items of {BODY} B: queue {queue:.1} B/item, baseline VecDeque<Box<str>> {baseline:.1} B/item, ratio {:.2}x",
        queue / baseline
    );
    println!(
        "memory: queue overhead beyond the {BODY}-byte body: {:.1} B/item (target <= 64; body allocation included)",
        queue - BODY as f64
    );
}
