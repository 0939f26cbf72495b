//! Two sessions over the simulated cable (`sim::Pair`): the whole sans-IO
//! core (scheduler, batching, CRC32C on both ends, credits, receive
//! queues) without devices. The simulated cable copies every byte twice
//! (into the wire, then into the receive buffer), as a real device read
//! does once.
//!
//! * `stream_64MiB`: 64 MiB over one stream channel.
//! * `streams_64x1MiB`: 64 stream channels moving 1 MiB each at once.
//! * `dgram_1500B`: 8192 datagrams of 1500 bytes (TUN traffic).
//! * `rtt_64B_message`: a 64-byte message A→B and a 64-byte reply B→A,
//!   each driven to delivery: time per round trip.

use std::time::Duration;

use bytes::Bytes;
use criterion::{
    black_box, criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion, Throughput,
};
use tbbridge_transport::session::{ChannelId, ChannelKind, Class, Event, Recv, SessionConfig};
use tbbridge_transport::sim::Pair;

/// A connected pair with `n` channels of `kind` opened by A and accepted
/// by B: (A's id, B's id) each.
fn pair_with(kind: ChannelKind, n: usize) -> (Pair, Vec<(ChannelId, ChannelId)>) {
    let mut p = Pair::new(SessionConfig::default(), 1);
    p.drive().expect("handshake");
    let ours: Vec<ChannelId> = (0..n)
        .map(|_| p.a.open(kind, Class::Bulk, "bench").expect("open"))
        .collect();
    p.drive().expect("open");
    let theirs: Vec<ChannelId> = p
        .events_b
        .drain(..)
        .filter_map(|e| match e {
            Event::Incoming { id, .. } => Some(id),
            _ => None,
        })
        .collect();
    assert_eq!(theirs.len(), n);
    for id in &theirs {
        p.b.accept(*id).expect("accept");
    }
    p.drive().expect("accept");
    p.events_a.clear();
    p.events_b.clear();
    // Each id as the other side sees it.
    let pairs = ours
        .into_iter()
        .map(|a| (a, ChannelId(a.0 ^ 1)))
        .collect::<Vec<_>>();
    assert!(pairs.iter().all(|(_, b)| theirs.contains(b)));
    (p, pairs)
}

/// Bytes the application offers per round (the default stream window).
const ROUND: usize = 8 << 20;

/// Moves `per_channel` bytes over every channel (A→B), reading as they
/// arrive; returns the bytes received.
fn move_streams(p: &mut Pair, chans: &[(ChannelId, ChannelId)], data: &Bytes) -> u64 {
    let per_channel = data.len();
    let mut sent = vec![0usize; chans.len()];
    let mut got = 0u64;
    let total = (per_channel * chans.len()) as u64;
    let mut rounds = 0;
    while got < total {
        rounds += 1;
        assert!(rounds < 1_000_000, "stalled at {got} of {total} bytes");
        for (i, (a, _)) in chans.iter().enumerate() {
            // The application writes at most a window's worth per round
            // in total, as it would between two device writes: the
            // simulated cable then holds one window, not everything.
            let stop = per_channel.min(sent[i] + ROUND / chans.len());
            while sent[i] < stop {
                match p.a.send(*a, data.slice(sent[i]..stop)) {
                    Ok(n) if n > 0 => sent[i] += n,
                    _ => break,
                }
            }
        }
        p.drive().expect("drive");
        for (_, b) in chans {
            while let Ok(Recv::Data(d)) = p.b.recv(*b, usize::MAX) {
                got += d.len() as u64;
                black_box(d);
            }
        }
        p.events_a.clear();
        p.events_b.clear();
    }
    got
}

fn bench_streams(c: &mut Criterion) {
    let mut g = c.benchmark_group("session");
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(5));
    g.warm_up_time(Duration::from_secs(1));

    let total = 64usize << 20;
    let one = Bytes::from(vec![0x5a; total]);
    g.throughput(Throughput::Bytes(total as u64));
    g.bench_function(BenchmarkId::from_parameter("stream_64MiB"), |b| {
        b.iter_batched(
            || pair_with(ChannelKind::Stream, 1),
            |(mut p, chans)| {
                assert_eq!(move_streams(&mut p, &chans, &one), total as u64);
                (p, chans) // dropped untimed
            },
            BatchSize::PerIteration,
        )
    });

    let per = 1usize << 20;
    let each = Bytes::from(vec![0x5a; per]);
    g.throughput(Throughput::Bytes((64 * per) as u64));
    g.bench_function(BenchmarkId::from_parameter("streams_64x1MiB"), |b| {
        b.iter_batched(
            || pair_with(ChannelKind::Stream, 64),
            |(mut p, chans)| {
                assert_eq!(move_streams(&mut p, &chans, &each), (64 * per) as u64);
                (p, chans)
            },
            BatchSize::PerIteration,
        )
    });
    g.finish();
}

fn bench_datagrams(c: &mut Criterion) {
    const N: usize = 8192;
    const SIZE: usize = 1500;
    let mut g = c.benchmark_group("session");
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(3));
    g.warm_up_time(Duration::from_secs(1));
    g.throughput(Throughput::Bytes((N * SIZE) as u64));
    let packet = Bytes::from(vec![0x45; SIZE]);
    g.bench_function(BenchmarkId::from_parameter("dgram_1500B"), |b| {
        b.iter_batched(
            || pair_with(ChannelKind::Datagram, 1),
            |(mut p, chans)| {
                let (a, bb) = chans[0];
                let (mut sent, mut got) = (0, 0);
                while got < N {
                    // Up to a TUN queue's worth, then let it drain.
                    while sent < N && p.a.send_datagram(a, packet.clone()) == Ok(true) {
                        sent += 1;
                    }
                    p.drive().expect("drive");
                    let before = got;
                    while let Ok(Recv::Data(d)) = p.b.recv_datagram(bb) {
                        black_box(d);
                        got += 1;
                    }
                    assert!(got > before, "no progress: {got} of {N} datagrams");
                }
                // B dropped none (A counts the ones its full queue refused).
                assert_eq!(p.b.stats().dgram_drops, 0);
                p
            },
            BatchSize::PerIteration,
        )
    });
    g.finish();
}

fn bench_rtt(c: &mut Criterion) {
    let mut g = c.benchmark_group("session");
    g.measurement_time(Duration::from_secs(3));
    g.warm_up_time(Duration::from_secs(1));
    let (mut p, chans) = pair_with(ChannelKind::Message, 1);
    let (a, b) = chans[0];
    let request = Bytes::from(vec![1u8; 64]);
    let reply = Bytes::from(vec![2u8; 64]);
    g.bench_function(BenchmarkId::from_parameter("rtt_64B_message"), |bench| {
        bench.iter(|| {
            p.a.send_message(a, request.clone()).expect("send");
            p.drive().expect("drive");
            let Ok(Recv::Data(m)) = p.b.recv_message(b) else {
                panic!("request lost")
            };
            black_box(m);
            p.b.send_message(b, reply.clone()).expect("send");
            p.drive().expect("drive");
            let Ok(Recv::Data(m)) = p.a.recv_message(a) else {
                panic!("reply lost")
            };
            black_box(m);
            p.events_a.clear();
            p.events_b.clear();
        })
    });
    g.finish();
}

criterion_group!(benches, bench_streams, bench_datagrams, bench_rtt);
criterion_main!(benches);
