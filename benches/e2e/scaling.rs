//! Scaling: events/s and CPU of `veil run` with 1, 2 and 4 input partitions
//! and as many workers, against the relay reading the same topic, plus 4
//! partitions spread over 1 and 2 workers.
//!
//! Each partition count has its own preloaded raw topic (the same events,
//! keyed by user id, as the main mode); outputs go to a topic with as many
//! partitions. Each point is measured like the main mode (`measure`), in
//! alternating rounds.
//!
//! veil gives each partition to one worker by a hash of (topic, partition)
//! (`worker_of` in `src/kafka/consume.rs`), so n partitions over n workers
//! need not keep every worker busy. Hence the report also shows each
//! worker's share of the workers' CPU, and the busiest thread's load, both
//! measured from /proc: a curve that flattens because a worker was idle
//! reads differently from one that flattens because the cores are full.
//!
//! The relay has no workers: one loop (the process's main thread) polls,
//! copies and sends, whatever the partition count; beside it run only
//! rust-rdkafka's producer polling thread (delivery callbacks, the ledger)
//! and librdkafka's own threads (network I/O). Its curve shows what more
//! partitions give the broker and librdkafka, not what more cores give.
//!
//! Needs a broker that holds every event in one partition: Tansu
//! (`bash benches/e2e.sh scaling EVENTS`). The mock cluster keeps 5 MiB per
//! partition (about 3,400 example events) and deletes older records.

use super::*;
use report::{Point, Scaling};

/// (partitions, workers), measured in this order each round; the relay
/// runs where they are equal (it has no workers).
const POINTS: [(i32, usize); 5] = [(1, 1), (2, 2), (4, 4), (4, 1), (4, 2)];

/// What the mock cluster keeps per partition (`rdkafka_mock.c`).
const MOCK_PARTITION_BYTES: usize = 5 << 20;

pub fn run(mode: Mode, events: usize, rounds: usize) {
    let broker = Broker::start();
    let examples = data::example_events();
    let bytes: usize = examples.iter().cycle().take(events).map(Vec::len).sum();
    assert!(
        !matches!(broker, Broker::Mock(_)) || bytes <= MOCK_PARTITION_BYTES,
        "{events} events ({bytes} bytes) do not fit in one partition of the mock cluster \
         (5 MiB): run `bash benches/e2e.sh scaling {events}` (Tansu) or set VEIL_TEST_BROKER"
    );
    let bootstrap = broker.bootstrap();
    let dir = log_dir();
    let loads: Vec<Load> = [1, 2, 4]
        .into_iter()
        .map(|n| Load::preload(&broker, &examples, events, n))
        .collect();
    let want_veil = forwarded_of(&examples, events);

    let mut points: Vec<Point> = Vec::new();
    for round in 0..rounds {
        for (partitions, workers) in POINTS {
            let load = loads.iter().find(|l| l.partitions == partitions).unwrap();
            let contestants: &[Who] = if workers == partitions as usize {
                &[Who::Relay, Who::Veil]
            } else {
                &[Who::Veil]
            };
            for &who in contestants {
                let out = broker.topic("bench-out", partitions);
                let dead = broker.topic("bench-dead", 1);
                let config = write_config(
                    &dir,
                    &bootstrap,
                    &load.raw,
                    &out,
                    &dead,
                    round,
                    Some(workers),
                );
                let want = match who {
                    Who::Relay => events,
                    Who::Veil => want_veil,
                };
                let mut child = who.start(&config);
                let group = format!("{out}-{round}");
                let run = measure(&bootstrap, load, &group, &out, want, &mut child);
                let threads = thread_cpu(child.0.id());
                kill(child);
                let point = point(who, partitions, workers, round, run, &threads);
                eprintln!("{}", report::scaling_round(mode, &point));
                points.push(point);
            }
        }
    }
    let summary = Scaling {
        points: &points,
        events,
        input_bytes: bytes,
        rounds,
        broker: broker.name(),
        cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
    };
    print!("{}", report::scaling(mode, &summary));
}

fn point(
    who: Who,
    partitions: i32,
    workers: usize,
    round: usize,
    run: Run,
    threads: &[(String, f64)],
) -> Point {
    let worker_cpu_s = match who {
        Who::Relay => Vec::new(),
        Who::Veil => (0..workers)
            .map(|i| {
                let name = format!("veil-worker-{i}");
                threads
                    .iter()
                    .filter(|(n, _)| *n == name)
                    .map(|(_, s)| s)
                    .sum()
            })
            .collect(),
    };
    let (busiest, busiest_cpu_s) = threads
        .iter()
        .max_by(|a, b| a.1.total_cmp(&b.1))
        .cloned()
        .unwrap_or_default();
    Point {
        who: who.name(),
        partitions,
        workers: matches!(who, Who::Veil).then_some(workers),
        round,
        run,
        worker_cpu_s,
        busiest,
        busiest_cpu_s,
    }
}
