//! The wire codec alone: building transmits (headers, CRC32C, payloads
//! referenced or inlined) and decoding them (header checks, CRC32C, record
//! parsing, payloads sliced without copies).
//!
//! Throughput is in bytes on the wire (headers included).

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use criterion::{
    black_box, criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion, Throughput,
};
use tbbridge_transport::session::SessionConfig;
use tbbridge_transport::wire::{BatchDecoder, Record, RecordIter, TransmitBuilder};

/// A workload: `count` records of `size` payload bytes.
struct Load {
    name: &'static str,
    count: usize,
    size: usize,
    dgram: bool,
}

const LOADS: [Load; 3] = [
    // 4 MiB of bulk data in 64 KiB chunks (the session's `max_chunk`).
    Load {
        name: "data_64KiB",
        count: 64,
        size: 64 * 1024,
        dgram: false,
    },
    // 1.5 MiB of MTU-sized TUN packets.
    Load {
        name: "dgram_1500B",
        count: 1024,
        size: 1500,
        dgram: true,
    },
    // 256 KiB of small messages (RPC-sized).
    Load {
        name: "data_64B",
        count: 4096,
        size: 64,
        dgram: false,
    },
];

fn records(load: &Load) -> Vec<Record> {
    let payload = Bytes::from(vec![0xa5; load.size]);
    (0..load.count)
        .map(|i| {
            if load.dgram {
                Record::Dgram {
                    chan: 3,
                    payload: payload.clone(),
                }
            } else {
                Record::Data {
                    chan: 3,
                    offset: (i * load.size) as u64,
                    end: false,
                    payload: payload.clone(),
                }
            }
        })
        .collect()
}

/// The session's defaults: batch size and inline limit.
fn builder() -> TransmitBuilder {
    let cfg = SessionConfig::default();
    TransmitBuilder::new(cfg.max_batch_body, cfg.inline_limit)
}

fn encode(recs: &[Record], b: &mut TransmitBuilder) -> usize {
    for r in recs {
        b.push(r);
    }
    let t = b.finish();
    black_box(t.segments());
    t.len()
}

fn bench_encode(c: &mut Criterion) {
    let mut g = c.benchmark_group("encode");
    g.measurement_time(Duration::from_secs(3));
    g.warm_up_time(Duration::from_secs(1));
    for load in &LOADS {
        let recs = records(load);
        let mut b = builder();
        let wire = encode(&recs, &mut b);
        g.throughput(Throughput::Bytes(wire as u64));
        g.bench_function(BenchmarkId::from_parameter(load.name), |bench| {
            bench.iter(|| encode(black_box(&recs), &mut b))
        });
    }
    g.finish();
}

fn bench_decode(c: &mut Criterion) {
    let mut g = c.benchmark_group("decode");
    g.measurement_time(Duration::from_secs(3));
    g.warm_up_time(Duration::from_secs(1));
    let max_body = SessionConfig::default().max_batch_body;
    for load in &LOADS {
        let recs = records(load);
        let mut b = builder();
        for r in &recs {
            b.push(r);
        }
        let stream = b.finish().to_vec();
        g.throughput(Throughput::Bytes(stream.len() as u64));
        g.bench_function(BenchmarkId::from_parameter(load.name), |bench| {
            bench.iter_batched_ref(
                // The bytes as read from the device (the copy is not timed).
                || BytesMut::from(&stream[..]),
                |buf| {
                    let mut d = BatchDecoder::new(max_body);
                    let mut n = 0;
                    while let Some(body) = d.decode(buf).expect("valid stream") {
                        for r in RecordIter::new(body) {
                            black_box(r.expect("valid record"));
                            n += 1;
                        }
                    }
                    assert_eq!(n, recs.len());
                },
                BatchSize::LargeInput,
            )
        });
    }
    g.finish();
}

criterion_group!(benches, bench_encode, bench_decode);
criterion_main!(benches);
