//! The one pipeline core every role shares: frames from the sources ([`crate::bus`]) are mapped
//! on N threads, their outputs handed to one [`Sink`] in the order the frames arrived, and each
//! frame's [`crate::bus::Token`] is settled — in that same order — once its output has a final
//! verdict. Only then does a Kafka offset get stored or a file checkpoint advance.
//!
//! ```text
//!  sources ──frames──▶ dispatcher ──batch i──▶ mapper thread (i mod N) ──▶ collector ──▶ sink
//!                                                                            │
//!                          tokens settled in arrival order ◀── verdicts ◀────┘
//! ```
//!
//! Batch `i` goes to thread `i mod N` and is collected from it in turn, so outputs leave in
//! arrival order without a reorder buffer. A document the destination refuses for good comes
//! back as a dead letter (built here, in one place, by [`Mapper::dead_letter`]) before its frame
//! is settled. A sink that gives up is fatal: the frame stays unsettled and is read again after
//! a restart.

use std::collections::VecDeque;

use tokio::sync::mpsc;

use crate::bus::{RawFrame, Receiver, Token};
use crate::ecs::{Dataset, DocId, FrameMeta, Mapper, Options};
use crate::sink::{Ack, Delivery, Output, Sink, SinkError};

/// How the core runs.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// Mapping threads.
    pub threads: usize,
    /// Outputs awaiting a verdict before the core stops taking frames.
    pub max_inflight: usize,
    /// Frames per batch handed to a mapping thread.
    pub batch: usize,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            threads: default_threads(),
            max_inflight: 10_000,
            batch: 256,
        }
    }
}

/// One mapping thread per available core.
pub fn default_threads() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
}

/// What a finished pipeline did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    pub frames: u64,
    pub documents: u64,
    pub dead_letters: u64,
    /// Documents a processor dropped (done, not sent).
    pub dropped: u64,
    /// Frames whose acknowledgement was settled.
    pub settled: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error("output not delivered: {0}")]
    Sink(#[from] SinkError),
    #[error("the dead letter for a refused document was not stored: {0}")]
    DeadLetterRefused(String),
    #[error("mapping thread stopped unexpectedly")]
    MapperStopped,
}

impl PipelineError {
    /// Whether a restart could get further (the unsettled frames are read again).
    pub fn is_retriable(&self) -> bool {
        match self {
            PipelineError::Sink(e) => e.is_retriable(),
            PipelineError::DeadLetterRefused(_) | PipelineError::MapperStopped => false,
        }
    }
}

/// Upper bounds (seconds) of the delivery latency histogram's buckets.
const LATENCY_BUCKETS: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
];

/// Receive → output acknowledged, per frame, for every core of the process (registered with
/// the metrics on first use).
struct Latency(prometheus::Histogram);

impl crate::telemetry::Source for Latency {
    fn collect(&self, out: &mut crate::telemetry::Metrics) {
        out.histogram(&self.0);
    }
}

fn latency() -> &'static prometheus::Histogram {
    static LATENCY: std::sync::OnceLock<std::sync::Arc<Latency>> = std::sync::OnceLock::new();
    &LATENCY
        .get_or_init(|| {
            let opts = prometheus::HistogramOpts::new(
                "wafstream_delivery_latency_seconds",
                "Time from a frame's receipt (by this process; in a worker, by the ingress that published it, so the two clocks' difference counts too) to its output's acknowledgement (written, indexed, or acknowledged by Kafka).",
            )
            .buckets(LATENCY_BUCKETS.to_vec());
            // Fixed, valid options: creating the histogram cannot fail.
            let h = prometheus::Histogram::with_opts(opts).expect("valid histogram options");
            let l = std::sync::Arc::new(Latency(h));
            crate::telemetry::global().register("delivery_latency", l.clone());
            l
        })
        .0
}

/// A frame is done: observe its delivery latency (`now` read once per group) and settle it.
fn done(token: Token, received_ms: i64, now_ms: i64, s: &mut Summary) {
    latency().observe((now_ms - received_ms).max(0) as f64 / 1000.0);
    token.settle();
    s.settled += 1;
}

/// One mapped frame in a batch's output buffer.
struct Item {
    received_ms: i64,
    dataset: Option<Dataset>,
    dropped: bool,
    id: DocId,
    end: usize,
    error: Option<String>,
    token: Token,
}

/// A mapped batch: documents back to back in `out`, each ending at its item's `end`.
struct Mapped {
    out: Vec<u8>,
    items: Vec<Item>,
}

/// Map one frame (or write its dead letter when the source already refused it).
pub fn map_frame(mapper: &Mapper, f: &RawFrame, out: &mut Vec<u8>) -> crate::ecs::Mapped {
    let meta = FrameMeta {
        received_ms: f.received_ms,
        input: f.input,
        source: f.source.as_deref(),
        peer: f.peer.as_deref(),
        offset: f.offset,
        tz: f.tz.as_deref(),
        occurrence: f.occurrence,
        sourcetype: f.sourcetype.as_deref(),
        time_ms: f.time_ms,
    };
    match f.refusal() {
        Some(reason) => mapper.dead_letter(&f.bytes, &meta, &reason, out),
        None => mapper.map(&f.bytes, &meta, f.w3c.as_deref(), out),
    }
}

/// Map a batch into `m`'s buffers (emptied first).
fn map_batch(mapper: &Mapper, batch: Vec<RawFrame>, m: &mut Mapped) {
    m.out.clear();
    m.items.clear();
    for f in batch {
        let r = map_frame(mapper, &f, &mut m.out);
        m.items.push(Item {
            received_ms: f.received_ms,
            dataset: r.dataset,
            dropped: r.dropped,
            id: r.id,
            end: m.out.len(),
            error: r.error,
            token: f.token,
        });
    }
}

fn mapping_thread(
    opts: Options,
    mut rx: mpsc::Receiver<Vec<RawFrame>>,
    tx: mpsc::Sender<Mapped>,
    spare: std::sync::mpsc::Receiver<Mapped>,
) {
    let mapper = Mapper::new(opts);
    while let Some(batch) = rx.blocking_recv() {
        // Buffers come back from the collector once delivered: no fresh pages per batch.
        let mut m = spare.try_recv().unwrap_or_else(|_| Mapped {
            out: Vec::with_capacity(batch.len() * 2048),
            items: Vec::with_capacity(batch.len()),
        });
        map_batch(&mapper, batch, &mut m);
        if tx.blocking_send(m).is_err() {
            return;
        }
    }
}

/// An output handed to the sink, waiting for its verdict.
struct Waiting {
    token: Token,
    received_ms: i64,
    ack: Ack,
}

/// Map every frame from `frames` until the channel closes, deliver to `sink`, settle the
/// tokens, flush the sink. On error the remaining frames stay unsettled.
pub async fn run<S: Sink>(
    mut frames: Receiver,
    opts: Options,
    settings: Settings,
    sink: &S,
) -> Result<Summary, PipelineError> {
    let n = settings.threads.max(1);
    let batch_max = settings.batch.max(1);
    let max_inflight = settings.max_inflight.max(1);
    let mut to_map = Vec::with_capacity(n);
    let mut from_map = Vec::with_capacity(n);
    let mut spares = Vec::with_capacity(n);
    let mut threads = Vec::with_capacity(n);
    for i in 0..n {
        let (btx, brx) = mpsc::channel::<Vec<RawFrame>>(2);
        let (mtx, mrx) = mpsc::channel::<Mapped>(2);
        let (stx, srx) = std::sync::mpsc::channel::<Mapped>();
        let o = opts.clone();
        let h = std::thread::Builder::new()
            .name(format!("wafstream-map-{i}"))
            .spawn(move || mapping_thread(o, brx, mtx, srx))
            .map_err(|_| PipelineError::MapperStopped)?;
        to_map.push(btx);
        from_map.push(mrx);
        spares.push(stx);
        threads.push(h);
    }
    // Dead letters for documents the destination refuses are written here.
    let dead_mapper = Mapper::new(opts);
    let mut s = Summary::default();
    let mut waiting: VecDeque<Waiting> = VecDeque::new();
    // Batch spans in dispatch order (batches come back from the mapping threads in that order).
    let mut traces: VecDeque<Option<std::sync::Arc<crate::otlp::BatchSpan>>> = VecDeque::new();
    let (mut dispatched, mut collected) = (0usize, 0usize);
    let max_batches = 2 * n;
    let mut closed = false;
    let result = loop {
        let in_map = dispatched - collected;
        if closed && in_map == 0 && waiting.is_empty() {
            break Ok(());
        }
        let take = !closed && in_map < max_batches && waiting.len() < max_inflight;
        tokio::select! {
            biased;
            m = recv_at(&mut from_map, collected), if in_map > 0 => {
                let Some(m) = m else { break Err(PipelineError::MapperStopped) };
                let spare = &spares[collected % n.max(1)];
                collected += 1;
                if let Some(Some(t)) = traces.pop_front() {
                    t.mapped();
                }
                match deliver(m, sink, &mut waiting, &mut s).await {
                    Ok(m) => {
                        let _ = spare.send(m);
                    }
                    Err(e) => break Err(e),
                }
            }
            r = front(&mut waiting), if !waiting.is_empty() => {
                let Some(w) = waiting.pop_front() else { continue };
                if let Err(e) = settle(w.token, w.received_ms, r, sink, &dead_mapper, &mut s).await {
                    break Err(e);
                }
            }
            f = frames.recv(), if take => match f {
                None => closed = true,
                Some(mut batch) => {
                    // Small batches waiting behind this one join it, up to the batch size.
                    while batch.len() < batch_max {
                        match frames.try_recv() {
                            Ok(more) => batch.extend(more),
                            Err(_) => break,
                        }
                    }
                    if batch.is_empty() {
                        continue;
                    }
                    s.frames += batch.len() as u64;
                    // Taken → every output acknowledged, with mapping as a child (OTLP on only).
                    traces.push_back(crate::otlp::trace_batch("core", &mut batch));
                    if to_map[dispatched % n].send(batch).await.is_err() {
                        break Err(PipelineError::MapperStopped);
                    }
                    dispatched += 1;
                }
            },
        }
        // Settle what is already known without waiting, oldest first.
        while let Some(r) = waiting.front_mut().and_then(|w| w.ack.try_take()) {
            let Some(w) = waiting.pop_front() else { break };
            if let Err(e) = settle(w.token, w.received_ms, r, sink, &dead_mapper, &mut s).await {
                return finish(Err(e), to_map, threads);
            }
        }
    };
    let result = result.and_then(|()| Ok(sink.flush()?));
    finish(result.map(|()| s), to_map, threads)
}

/// How a stop drains: how long the outputs in flight may take once intake stopped, and what
/// cuts that short (a second interrupt).
pub struct Drain<I> {
    pub timeout: std::time::Duration,
    /// Started after the first shutdown signal; resolving abandons the drain.
    pub interrupt: I,
}

/// Why a drain was abandoned: the outputs still in flight were not acknowledged, so their
/// frames were not settled (no offset stored, no checkpoint advanced past them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Abandoned {
    #[error("the drain timeout ({0:?}) passed with outputs still undelivered")]
    Timeout(std::time::Duration),
    #[error("interrupted again while outputs were still undelivered")]
    Interrupted,
}

/// Run `consume` (the core, or the ingress's publisher) until `shutdown`, or until it ends on
/// its own (an error); then run `stop`, which ends the sources so that `consume` drains what
/// they sent and finishes — within `drain.timeout`, unless `drain.interrupt` comes first.
/// Returns what both gave; `consume`'s result is [`Abandoned`] when the drain was cut short
/// (it is dropped then, so the sources' sends fail and `stop` completes).
pub async fn until<T, U, F, I, IF>(
    shutdown: impl std::future::Future<Output = ()>,
    consume: impl std::future::Future<Output = T>,
    stop: impl FnOnce() -> F,
    drain: Drain<I>,
) -> (Result<T, Abandoned>, U)
where
    F: std::future::Future<Output = U>,
    I: FnOnce() -> IF,
    IF: std::future::Future<Output = ()>,
{
    let stopping = tokio::sync::Notify::new();
    let runner = async {
        let mut consume = std::pin::pin!(consume);
        tokio::select! {
            r = &mut consume => {
                stopping.notify_one();
                return Ok(r);
            }
            _ = shutdown => {}
        }
        stopping.notify_one();
        tokio::select! {
            r = &mut consume => Ok(r),
            _ = tokio::time::sleep(drain.timeout) => Err(Abandoned::Timeout(drain.timeout)),
            _ = (drain.interrupt)() => Err(Abandoned::Interrupted),
        }
    };
    let stopper = async {
        stopping.notified().await;
        stop().await
    };
    tokio::join!(runner, stopper)
}

fn finish<T>(
    r: Result<T, PipelineError>,
    to_map: Vec<mpsc::Sender<Vec<RawFrame>>>,
    threads: Vec<std::thread::JoinHandle<()>>,
) -> Result<T, PipelineError> {
    drop(to_map);
    // The threads end when their input closes; an error may leave one blocked on a full
    // output channel, which is dropped with this function's caller, so do not wait for them.
    if r.is_ok() {
        for t in threads {
            let _ = t.join();
        }
    }
    r
}

/// The next mapped batch: batch `i` comes from thread `i mod N`.
async fn recv_at(from_map: &mut [mpsc::Receiver<Mapped>], i: usize) -> Option<Mapped> {
    let n = from_map.len();
    match from_map.get_mut(i % n.max(1)) {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// The verdict of the oldest output (waits for it).
async fn front(waiting: &mut VecDeque<Waiting>) -> Result<Delivery, SinkError> {
    match waiting.front_mut() {
        Some(w) => (&mut w.ack).await,
        None => std::future::pending().await,
    }
}

/// Hand a mapped batch's outputs to the sink, in order, then write them through. Returns the
/// batch's buffers, emptied, for reuse.
async fn deliver<S: Sink>(
    mut m: Mapped,
    sink: &S,
    waiting: &mut VecDeque<Waiting>,
    s: &mut Summary,
) -> Result<Mapped, PipelineError> {
    let mut start = 0;
    let mut ready = Vec::new();
    for item in m.items.drain(..) {
        let body = &m.out[start..item.end];
        start = item.end;
        if item.dropped {
            // Nothing to send: the frame is done, in its turn.
            s.dropped += 1;
            if waiting.is_empty() {
                ready.push((item.token, item.received_ms));
            } else {
                waiting.push_back(Waiting {
                    token: item.token,
                    received_ms: item.received_ms,
                    ack: Ack::ready(Ok(Delivery::Accepted)),
                });
            }
            continue;
        }
        if item.dataset.is_some() {
            s.documents += 1;
        } else {
            s.dead_letters += 1;
        }
        let out = Output {
            dataset: item.dataset,
            id: &item.id,
            body,
            error: item.error.as_deref(),
        };
        let mut ack = sink.send(out).await?;
        // Verdicts known at once (local outputs) skip the queue when nothing is ahead of them.
        if waiting.is_empty() {
            match ack.try_take() {
                Some(Ok(Delivery::Accepted)) => {
                    ready.push((item.token, item.received_ms));
                    continue;
                }
                Some(r) => ack = Ack::ready(r),
                None => {}
            }
        }
        waiting.push_back(Waiting {
            token: item.token,
            received_ms: item.received_ms,
            ack,
        });
    }
    sink.write_through()?;
    let now = crate::bus::now_ms();
    for (t, received_ms) in ready {
        done(t, received_ms, now, s);
    }
    Ok(m)
}

/// A frame's output has its verdict: settle the token, after sending a refused document to the
/// dead-letter output.
async fn settle<S: Sink>(
    token: Token,
    received_ms: i64,
    verdict: Result<Delivery, SinkError>,
    sink: &S,
    dead_mapper: &Mapper,
    s: &mut Summary,
) -> Result<(), PipelineError> {
    match verdict? {
        Delivery::Accepted => {}
        Delivery::Rejected { reason, body } => {
            let meta = FrameMeta {
                received_ms: crate::bus::now_ms(),
                input: "sink",
                ..FrameMeta::default()
            };
            let mut dead = Vec::with_capacity(body.len() + 256);
            let m = dead_mapper.dead_letter(&body, &meta, &reason, &mut dead);
            let out = Output {
                dataset: None,
                id: &m.id,
                body: &dead,
                error: Some(&reason),
            };
            let ack = sink.send(out).await?;
            sink.write_through()?;
            match ack.await? {
                Delivery::Accepted => {
                    s.documents -= 1;
                    s.dead_letters += 1;
                }
                Delivery::Rejected { reason: why, .. } => {
                    return Err(PipelineError::DeadLetterRefused(why));
                }
            }
        }
    }
    done(token, received_ms, crate::bus::now_ms(), s);
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use rand::{Rng, SeedableRng};

    use super::*;
    use crate::bus::Progress;

    /// Records the order in which the pipeline settles positions.
    #[derive(Default)]
    struct Order(Mutex<Vec<u64>>);

    impl Progress for Order {
        fn done(&self, pos: u64) {
            self.0.lock().unwrap().push(pos);
        }
    }

    /// A sink whose verdicts arrive out of order (random delays); every `reject_every`-th
    /// document is refused for good. Records what it was handed, in order.
    struct Shuffled {
        seen: Mutex<Vec<(Option<Dataset>, String)>>,
        rng: Mutex<rand::rngs::StdRng>,
        reject_every: usize,
    }

    impl Sink for Shuffled {
        async fn send(&self, out: Output<'_>) -> Result<Ack, SinkError> {
            let n = {
                let mut seen = self.seen.lock().unwrap();
                seen.push((out.dataset, String::from_utf8_lossy(out.body).into_owned()));
                seen.len()
            };
            let delay = self.rng.lock().unwrap().gen_range(0..3000u64);
            let reject = out.dataset.is_some() && n % self.reject_every == 0;
            let body = out.body.to_vec();
            Ok(Ack::later(async move {
                tokio::time::sleep(Duration::from_micros(delay)).await;
                Ok(if reject {
                    Delivery::Rejected {
                        reason: "refused for the test".into(),
                        body,
                    }
                } else {
                    Delivery::Accepted
                })
            }))
        }

        fn flush(&self) -> Result<(), SinkError> {
            Ok(())
        }
    }

    fn frames(n: usize, order: &Arc<Order>) -> Vec<RawFrame> {
        let mut text = String::new();
        crate::generate::lines(crate::generate::Kind::Mixed, n as u64, 7, &mut text);
        let progress: Arc<dyn Progress> = order.clone();
        text.lines()
            .enumerate()
            .map(|(i, l)| RawFrame {
                // Every 13th frame cannot be parsed: a dead letter in the middle of the flow.
                bytes: if i % 13 == 5 {
                    bytes::Bytes::from(format!("garbage {i}"))
                } else {
                    bytes::Bytes::from(l.to_string())
                },
                input: "test",
                offset: Some(i as u64),
                token: Token::new(progress.clone(), i as u64),
                ..RawFrame::default()
            })
            .collect()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn outputs_leave_and_tokens_settle_in_arrival_order_with_out_of_order_verdicts() {
        for (seed, threads, batch, inflight) in [(1u64, 4, 7, 50), (2, 3, 1, 5), (3, 4, 64, 1000), (4, 1, 16, 3)] {
            let n = 1500;
            let order = Arc::new(Order::default());
            let input = frames(n, &order);
            // What a single mapper gives, frame by frame: the reference.
            let reference: Vec<(Option<Dataset>, String)> = {
                let mapper = Mapper::new(Options::default());
                input
                    .iter()
                    .map(|f| {
                        let mut out = Vec::new();
                        let m = map_frame(&mapper, f, &mut out);
                        (m.dataset, String::from_utf8(out).unwrap())
                    })
                    .collect()
            };
            let (tx, rx) = crate::bus::channel(100);
            let feeder = tokio::spawn(async move {
                // Batches of every size, as sources send them.
                let mut input = input.into_iter().peekable();
                let mut k = 0;
                while input.peek().is_some() {
                    k += 1;
                    tx.send(input.by_ref().take(k % 300 + 1).collect()).await.unwrap();
                }
            });
            let sink = Shuffled {
                seen: Mutex::new(Vec::new()),
                rng: Mutex::new(rand::rngs::StdRng::seed_from_u64(seed)),
                reject_every: 11,
            };
            let settings = Settings {
                threads,
                batch,
                max_inflight: inflight,
            };
            let s = run(rx, Options::default(), settings, &sink).await.unwrap();
            feeder.await.unwrap();
            let settled = order.0.lock().unwrap().clone();
            assert_eq!(
                settled,
                (0..n as u64).collect::<Vec<_>>(),
                "seed {seed}: settled out of order"
            );
            let seen = sink.seen.into_inner().unwrap();
            // The sink saw every frame's output in arrival order; refused documents come back
            // as extra dead letters after them.
            let firsts: Vec<_> = seen
                .iter()
                .filter(|(_, b)| !b.contains("refused for the test"))
                .cloned()
                .collect();
            assert_eq!(firsts, reference, "seed {seed}: outputs out of order or not as mapped");
            let refused = seen.len() - n;
            assert!(refused > 0, "the test must exercise refusals");
            assert_eq!(s.frames, n as u64);
            assert_eq!(s.settled, n as u64);
            let dead_in = reference.iter().filter(|(d, _)| d.is_none()).count();
            assert_eq!(s.dead_letters as usize, dead_in + refused);
            assert_eq!((s.documents + s.dead_letters) as usize, n);
        }
    }

    /// A sink that gives up: the pipeline stops with the error and does not settle that frame
    /// or any after it.
    struct GivesUp;

    impl Sink for GivesUp {
        async fn send(&self, out: Output<'_>) -> Result<Ack, SinkError> {
            let fail = out.body.windows(4).any(|w| w == b"FAIL");
            Ok(Ack::later(async move {
                if fail {
                    Err(SinkError::GaveUp("unreachable for the test".into()))
                } else {
                    Ok(Delivery::Accepted)
                }
            }))
        }

        fn flush(&self) -> Result<(), SinkError> {
            Ok(())
        }
    }

    #[tokio::test]
    async fn a_sink_that_gives_up_stops_the_pipeline_without_settling_past_it() {
        let order = Arc::new(Order::default());
        let mut input = frames(40, &order);
        input[20].bytes = bytes::Bytes::from_static(b"FAIL not an event");
        let (tx, rx) = crate::bus::channel(100);
        tx.send(input).await.unwrap();
        drop(tx);
        let settings = Settings {
            threads: 2,
            batch: 4,
            max_inflight: 100,
        };
        let e = run(rx, Options::default(), settings, &GivesUp).await.unwrap_err();
        assert!(e.is_retriable(), "{e}");
        assert_eq!(*order.0.lock().unwrap(), (0..20).collect::<Vec<_>>());
    }
}
