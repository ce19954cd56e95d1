//! Throughput of the primitives a backup runs per byte: the AEAD candidates (XChaCha20-Poly1305,
//! AES-256-GCM), keyed BLAKE3, zstd levels, and FastCDC. Run: `cargo bench -p holdfast-core`.

use aes_gcm::aead::{Aead, KeyInit};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use holdfast_core::crypto::MasterKey;

fn input(n: usize) -> Vec<u8> {
    // Text-like data: compressible like source code.
    let words = [
        "static ", "int ", "return ", "struct ", "if (", "->next", "= NULL;", "\n\t", "u32 ",
        "kmalloc(",
    ];
    let mut out = Vec::with_capacity(n);
    let mut x: u64 = 1;
    while out.len() < n {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(words[(x % words.len() as u64) as usize].as_bytes());
    }
    out.truncate(n);
    out
}

fn aead(c: &mut Criterion) {
    let data = input(1 << 20);
    let mut g = c.benchmark_group("aead-1MiB");
    g.throughput(Throughput::Bytes(data.len() as u64));
    let k = MasterKey::generate();
    g.bench_function("xchacha20poly1305", |b| b.iter(|| k.encrypt(b"aad", &data)));
    let gcm = aes_gcm::Aes256Gcm::new(&[7u8; 32].into());
    g.bench_function("aes256gcm", |b| {
        b.iter(|| {
            let nonce: [u8; 12] = rand::random();
            gcm.encrypt(&nonce.into(), data.as_slice()).unwrap()
        })
    });
    g.finish();
}

fn hashing(c: &mut Criterion) {
    let data = input(1 << 20);
    let mut g = c.benchmark_group("hash-1MiB");
    g.throughput(Throughput::Bytes(data.len() as u64));
    let k = MasterKey::generate();
    g.bench_function("keyed-blake3", |b| b.iter(|| k.blob_id(&data)));
    g.finish();
}

fn compression(c: &mut Criterion) {
    let data = input(1 << 20);
    let mut g = c.benchmark_group("zstd-1MiB");
    g.throughput(Throughput::Bytes(data.len() as u64));
    for level in [1, 3, 6] {
        let mut z = zstd::bulk::Compressor::new(level).unwrap();
        g.bench_with_input(BenchmarkId::from_parameter(level), &level, |b, _| {
            b.iter(|| z.compress(&data).unwrap())
        });
    }
    g.finish();
}

fn chunking(c: &mut Criterion) {
    let data = input(16 << 20);
    let mut g = c.benchmark_group("fastcdc-16MiB");
    g.throughput(Throughput::Bytes(data.len() as u64));
    g.bench_function("512K-1M-8M", |b| {
        b.iter(|| {
            fastcdc::v2020::FastCDC::with_level_and_seed(
                &data,
                512 << 10,
                1 << 20,
                8 << 20,
                fastcdc::v2020::Normalization::Level1,
                42,
            )
            .count()
        })
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20).measurement_time(std::time::Duration::from_secs(3)).warm_up_time(std::time::Duration::from_secs(1));
    targets = aead, hashing, compression, chunking
}
criterion_main!(benches);
