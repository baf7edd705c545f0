//! Fuzzes the checkpoint decoder. Every input is tried twice: as given (the checksum rejects
//! almost all mutations early), and with the trailing xxh3 checksum recomputed, so mutations
//! reach the schema walk, the validation and the optimizer construction behind it. Whatever
//! decodes must re-encode and decode to the same state.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vsgd::checkpoint;

fn check(data: &[u8]) {
    if let Ok(opt) = checkpoint::load(data) {
        let again = checkpoint::save(&opt).expect("a loaded optimizer saves");
        let back = checkpoint::load(&again).expect("what was saved loads");
        assert_eq!(checkpoint::save(&back).unwrap(), again);
    }
    if let Ok(c) = checkpoint::Checkpoint::parse(data) {
        // Walking every array must not panic either.
        for t in &c.tensors {
            for j in 0..t.arrays.len() {
                t.values(j).for_each(drop);
            }
        }
    }
    // As a shard set of one (and of two copies).
    let _ = checkpoint::load_shards(&[data]);
    let _ = checkpoint::load_shards(&[data, data]);
}

fuzz_target!(|data: &[u8]| {
    check(data);
    if data.len() >= 9 {
        let mut fixed = data.to_vec();
        let body = fixed.len() - 9;
        let sum = xxhash_rust::xxh3::xxh3_64(&fixed[..body]);
        fixed[body] = 0xcf;
        fixed[body + 1..].copy_from_slice(&sum.to_be_bytes());
        check(&fixed);
    }
});
