//! Soak: veil's memory under a sustained load. veil (4 partitions, the
//! shipped policy, its default workers, as the main mode) reads what a
//! producer thread writes at RATE events/s for SECONDS, in a burst every
//! 10 ms. Every 10 s the bench samples veil's VmRSS and VmHWM from
//! /proc/PID/status, with how far veil's group has committed and how many
//! inputs the broker has acknowledged. At the end it waits until veil has
//! committed every input, samples once more, and reports the samples, RSS
//! at 1 min, at the end and at most, the slope over the second half, and
//! veil's CPU per million inputs over the whole soak (start and idle
//! polling included, so above the saturated runs' figure).
//!
//! Committed offsets trail what veil has read by up to about 1.2 s (offsets
//! are stored every 200 ms and committed every 1 s), so a lag of about
//! 1.2 × RATE at a sample is veil keeping up.
//!
//! Broker: Tansu, which `bash benches/e2e.sh soak` starts. Nothing is ever
//! deleted there, so "committed == produced" at the end shows veil
//! processed every input of the soak, whatever its lag on the way. The
//! price is the broker's memory, not veil's: Tansu's in-memory storage
//! keeps everything written, about 2.7 GB of inputs for 600 s at 3,000
//! events/s (1.5 KB each) plus veil's outputs (the script reports Tansu's
//! peak RSS at the end). The mock cluster (no `VEIL_TEST_BROKER`) keeps 5 MiB
//! per partition, about 13,900 example events over the 4 partitions, and
//! deletes older records; that suffices while veil keeps up, so there the
//! bench checks at every sample whether a partition's oldest kept offset
//! has passed veil's committed offset and reports such inputs as possibly
//! deleted before veil read them.

use std::sync::atomic::AtomicU64;

use super::*;
use report::{Soak, SoakSample};

/// How often veil's memory is sampled.
const SAMPLE_EVERY: Duration = Duration::from_secs(10);
/// How often the producer sends what is due.
const BURST_EVERY: Duration = Duration::from_millis(10);

pub fn run(mode: Mode, seconds: usize, rate: usize) {
    let broker = Broker::start();
    let bootstrap = broker.bootstrap();
    let dir = log_dir();
    let raw = broker.topic("soak-raw", PARTITIONS);
    let out = broker.topic("soak-out", PARTITIONS);
    let dead = broker.topic("soak-dead", 1);
    let config = write_config(&dir, &bootstrap, &raw, &out, &dead, 0, None);
    let group = format!("{out}-0");
    let mut veil = Who::Veil.start(&config);
    let pid = veil.0.id();
    eprintln!("soak: veil (pid {pid}) reads {raw}; {rate} events/s for {seconds} s");

    let produced = Arc::new(AtomicU64::new(0));
    let producing = {
        let (bootstrap, raw, produced) = (bootstrap.clone(), raw.clone(), produced.clone());
        let events = keyed(&data::example_events(), 1_000);
        std::thread::spawn(move || produce_at(&bootstrap, &raw, &events, rate, seconds, produced))
    };
    let c = client(&bootstrap, &group);
    let take = |t_s: f64, drained: bool, veil: &mut Contestant| {
        assert!(
            veil.0.try_wait().unwrap().is_none(),
            "veil exited during the soak (log in {})",
            dir.display()
        );
        sample(&c, &raw, pid, &produced, t_s, drained)
    };

    let started = Instant::now();
    let mut samples = Vec::new();
    for k in 0..=(seconds as u32 / SAMPLE_EVERY.as_secs() as u32) {
        let due = started + SAMPLE_EVERY * k;
        std::thread::sleep(due.saturating_duration_since(Instant::now()));
        let s = take(started.elapsed().as_secs_f64(), false, &mut veil);
        eprintln!("{}", report::soak_sample(mode, &s));
        samples.push(s);
    }
    producing.join().expect("producer thread");

    // Drained: veil has committed every input the broker acknowledged.
    let total = produced.load(Ordering::Relaxed);
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let s = take(started.elapsed().as_secs_f64(), true, &mut veil);
        if s.committed >= total {
            eprintln!("{}", report::soak_sample(mode, &s));
            samples.push(s);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "veil committed only {} of {total} inputs within 120 s of the load's end",
            s.committed
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    let (cpu_s, _) = cost(pid);
    kill(veil);

    let soak = Soak {
        samples: &samples,
        seconds,
        rate,
        broker: broker.name(),
        cpu_s_per_m: cpu_s / total.max(1) as f64 * 1e6,
    };
    print!("{}", report::soak(mode, &soak));
}

/// veil's memory and progress now.
fn sample(
    c: &BaseConsumer,
    raw: &str,
    pid: u32,
    produced: &AtomicU64,
    t_s: f64,
    drained: bool,
) -> SoakSample {
    // Read before the offsets, so that committed never exceeds produced.
    let produced = produced.load(Ordering::Relaxed);
    let committed = committed(c, raw, PARTITIONS);
    // Inputs the broker no longer holds that veil's group had not committed
    // (only the mock cluster deletes; Tansu's low watermark stays 0).
    let deleted_unread = committed
        .iter()
        .enumerate()
        .map(|(p, &at)| {
            c.fetch_watermarks(raw, p as i32, Duration::from_secs(5))
                .map_or(0, |(low, _)| (low - at).max(0) as u64)
        })
        .sum();
    SoakSample {
        t_s,
        rss_mb: status_mb(pid, "VmRSS"),
        hwm_mb: status_mb(pid, "VmHWM"),
        committed: committed.iter().sum::<i64>() as u64,
        produced,
        deleted_unread,
        drained,
    }
}

/// Counts the records the broker acknowledged.
struct Counted(Arc<AtomicU64>);

impl ClientContext for Counted {}

impl ProducerContext for Counted {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        // The broker is local: a failed delivery is a bench failure.
        if let Err((e, _)) = result {
            panic!("soak input not delivered: {e}");
        }
        self.0.fetch_add(1, Ordering::Relaxed);
    }
}

/// Write `events` (cycled) to `raw` at `rate` per second for `seconds`:
/// every [`BURST_EVERY`], whatever is due by then.
fn produce_at(
    bootstrap: &str,
    raw: &str,
    events: &[(Option<Vec<u8>>, Vec<u8>)],
    rate: usize,
    seconds: usize,
    produced: Arc<AtomicU64>,
) {
    let producer: ThreadedProducer<Counted> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("partitioner", "murmur2_random")
        .set("linger.ms", "5")
        .create_with_context(Counted(produced))
        .expect("producer");
    let total = rate * seconds;
    let started = Instant::now();
    let mut sent = 0;
    let mut next = events.iter().cycle();
    while sent < total {
        let due = ((started.elapsed().as_secs_f64() * rate as f64) as usize).min(total);
        while sent < due {
            let (key, value) = next.next().unwrap();
            let mut r = BaseRecord::to(raw).payload(value);
            if let Some(k) = key {
                r = r.key(k);
            }
            loop {
                match producer.send(r) {
                    Ok(()) => break,
                    Err((_, back)) => {
                        r = back;
                        std::thread::sleep(Duration::from_millis(1));
                    }
                }
            }
            sent += 1;
        }
        std::thread::sleep(BURST_EVERY);
    }
    producer
        .flush(Duration::from_secs(60))
        .expect("flush the soak's inputs");
}
