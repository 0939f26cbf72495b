//! The wire codec alone: building transmits (headers, CRC32C, payloads
//! referenced or inlined) and decoding them (header checks, CRC32C, record
//! parsing, payloads sliced without copies).
//!
//! Throughput is in bytes on the wire (headers included).
//!
//! The `crc` group compares CRC32C implementations alone, per buffer size:
//! 64 B (a header's worth, tiny batches), 1 KiB, 64 KiB (a data chunk),
//! 256 KiB (the default batch) and 4 MiB (beyond the caches). `wire::crc` is
//! the one the codec uses; the others are the candidates it was chosen from.

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

/// CRC32C buffer sizes: see the module docs.
const CRC_SIZES: [(&str, usize); 5] = [
    ("64B", 64),
    ("1KiB", 1024),
    ("64KiB", 64 * 1024),
    ("256KiB", 256 * 1024),
    ("4MiB", 4 * 1024 * 1024),
];

/// Software CRC32C, slice-by-16 tables: what a CPU without CRC instructions
/// (or carry-less multiply) would get.
static CRC_TABLE16: crc::Crc<u32, crc::Table<16>> =
    crc::Crc::<u32, crc::Table<16>>::new(&crc::CRC_32_ISCSI);

/// A CRC32C candidate: the same `append` contract as `wire::crc`.
type Candidate = (&'static str, fn(u32, &[u8]) -> u32);

const CRC_CANDIDATES: [Candidate; 4] = [
    ("wire::crc", tbbridge_transport::wire::crc::crc32c_append),
    // SSE4.2 crc32 instruction, three interleaved streams.
    ("crc32c", crc32c::crc32c_append),
    // PCLMULQDQ folding fused with the crc32 instruction (AVX-512
    // VPCLMULQDQ where there is AVX-512; this machine has none).
    ("crc-fast", |crc, data| {
        let mut d = crc_fast::Digest::new_with_init_state(
            crc_fast::CrcAlgorithm::Crc32Iscsi,
            u64::from(!crc),
        );
        d.update(data);
        d.finalize() as u32
    }),
    ("crc-table16", |crc, data| {
        let mut d = CRC_TABLE16.digest_with_initial(!crc);
        d.update(data);
        d.finalize()
    }),
];

fn bench_crc(c: &mut Criterion) {
    let mut g = c.benchmark_group("crc");
    g.measurement_time(Duration::from_secs(2));
    g.warm_up_time(Duration::from_millis(500));
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let data: Vec<u8> = (0..CRC_SIZES[CRC_SIZES.len() - 1].1)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    let want: Vec<u32> = CRC_SIZES
        .iter()
        .map(|&(_, n)| crc32c::crc32c(&data[..n]))
        .collect();
    for (&(size_name, n), &want) in CRC_SIZES.iter().zip(&want) {
        g.throughput(Throughput::Bytes(n as u64));
        for (name, f) in CRC_CANDIDATES {
            assert_eq!(f(0, &data[..n]), want, "{name} at {size_name}");
            g.bench_function(BenchmarkId::new(name, size_name), |bench| {
                bench.iter(|| f(0, black_box(&data[..n])))
            });
        }
    }
    g.finish();
}

criterion_group!(benches, bench_encode, bench_decode, bench_crc);
criterion_main!(benches);
