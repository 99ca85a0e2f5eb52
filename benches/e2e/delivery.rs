//! Delivery: what `delivery: exactly_once` costs against `at_least_once`,
//! `veil run` with the shipped policy on librdkafka's mock cluster (the
//! only broker here with transactions; Tansu 0.6 has none).
//!
//! Throughput is measured like the main mode (`measure`: every input
//! committed, outputs read back, their time span), in alternating rounds
//! on one preloaded raw topic; latency like the main mode's second phase
//! (`latencies`: send to read-back, at a fixed rate into an idle pipeline).
//! The mock shows a transaction's records before it commits (it does not
//! filter for `read_committed`), so the latency here is what veil adds
//! before it sends, not the wait for the commit that a `read_committed`
//! consumer of Kafka would also see (up to `exactly_once.max_ms`, 100 ms by
//! default): read it as a lower bound for exactly once.
//!
//! The mock keeps 5 MiB per partition: 10,000 example events over 4
//! partitions fit (`bash benches/e2e.sh delivery 10000 3`).

use super::*;

pub fn run(events: usize, rounds: usize, rate: usize, seconds: usize) {
    let broker = Broker::mock();
    let bootstrap = broker.bootstrap();
    let dir = log_dir();
    let examples = data::example_events();
    let load = Load::preload(&broker, &examples, events, PARTITIONS);
    let want = forwarded_of(&examples, events);
    let modes = ["at_least_once", "exactly_once"];
    let mut runs: HashMap<&str, Vec<Run>> = HashMap::new();
    for round in 0..rounds {
        for delivery in modes {
            let out = broker.topic("bench-out", PARTITIONS);
            let dead = broker.topic("bench-dead", 1);
            let config = write_config(&dir, &bootstrap, &load.raw, &out, &dead, round, None);
            with_delivery(&config, delivery);
            let mut child = Who::Veil.start(&config);
            let group = format!("{out}-{round}");
            let run = measure(&bootstrap, &load, &group, &out, want, &mut child);
            kill(child);
            eprintln!(
                "round {round} {delivery:>13}: {:>8.0} events/s, {:>6.2} CPU-s per M events",
                run.events_per_s, run.cpu_s_per_m
            );
            runs.entry(delivery).or_default().push(run);
        }
    }
    println!(
        "## delivery, mock cluster, {events} events x {rounds} rounds, {PARTITIONS} partitions"
    );
    for delivery in modes {
        let mut eps: Vec<f64> = runs[delivery].iter().map(|r| r.events_per_s).collect();
        let mut cpu: Vec<f64> = runs[delivery].iter().map(|r| r.cpu_s_per_m).collect();
        eps.sort_by(f64::total_cmp);
        cpu.sort_by(f64::total_cmp);
        let raw = broker.topic("bench-lat-raw", PARTITIONS);
        let out = broker.topic("bench-lat-out", PARTITIONS);
        let dead = broker.topic("bench-lat-dead", 1);
        let config = write_config(&dir, &bootstrap, &raw, &out, &dead, 99, None);
        with_delivery(&config, delivery);
        let child = Who::Veil.start(&config);
        let (p50, p99, n) = latencies(&bootstrap, &raw, &out, &examples, rate, seconds, Who::Veil);
        kill(child);
        println!(
            "{delivery:>13}: median {:.0} events/s (runs {:?}), median {:.1} CPU-s per M events; \
             latency at {rate}/s: p50 {p50:.1} ms, p99 {p99:.1} ms ({n} events)",
            eps[eps.len() / 2],
            eps.iter().map(|e| e.round() as u64).collect::<Vec<_>>(),
            cpu[cpu.len() / 2],
        );
    }
}

fn with_delivery(config: &Path, delivery: &str) {
    let mut yaml = std::fs::read_to_string(config).unwrap();
    yaml.push_str(&format!("delivery: {delivery}\n"));
    std::fs::write(config, yaml).unwrap();
}
