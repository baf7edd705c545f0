//! Checkpoint throughput against memcpy of the same bytes, measured in one run.
//!
//! `cargo run --release --example checkpoint_throughput [-- PARAMS [DIR]]`
//! (default 100 000 000 parameters of VSGD f32: 1.2 GB of state; DIR for the file test,
//! default the temp dir). Each figure is the best of 3; ratios compare runs of this process.

use std::hint::black_box;
use std::time::Instant;

use vsgd::{checkpoint, Algorithm, Config, Optimizer, TensorId, TensorSpec};

fn best<T>(reps: usize, mut f: impl FnMut() -> T) -> (f64, T) {
    let mut best = f64::INFINITY;
    let mut out = None;
    for _ in 0..reps {
        drop(out.take());
        let t = Instant::now();
        let r = f();
        best = best.min(t.elapsed().as_secs_f64());
        out = Some(r);
    }
    (best, out.expect("reps >= 1"))
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let params: usize = args
        .first()
        .map_or(100_000_000, |a| a.parse().expect("PARAMS"));
    let dir = args
        .get(1)
        .map_or_else(std::env::temp_dir, std::path::PathBuf::from);
    let tensors = 4;
    let mut opt = Optimizer::new(Config::default_for(Algorithm::Vsgd)).unwrap();
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    for k in 0..tensors {
        let id = opt
            .add_tensor(TensorSpec::new(&[params / tensors]).name(&format!("layer{k}")))
            .unwrap();
        for name in ["mug", "bg", "bhg"] {
            for x in opt.state_mut::<f32>(id, name).unwrap() {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                *x = (seed >> 40) as f32 * 1e-7;
            }
        }
    }
    let arrays: Vec<&[f32]> = (0..tensors)
        .flat_map(|k| {
            let opt = &opt;
            ["mug", "bg", "bhg"]
                .into_iter()
                .map(move |n| opt.state::<f32>(TensorId(k), n).unwrap())
        })
        .collect();
    let bytes: usize = arrays.iter().map(|a| a.len() * 4).sum();
    let gb = bytes as f64 / 1e9;
    println!("state: {params} parameters of VSGD f32 = {gb:.3} GB in {tensors} tensors");

    // memcpy of the same bytes into a fresh allocation (what save does: page faults included)…
    let (t_copy_fresh, v) = best(3, || {
        let mut v: Vec<f32> = Vec::with_capacity(bytes / 4);
        for a in &arrays {
            v.extend_from_slice(a);
        }
        black_box(v)
    });
    drop(v);
    // …and into memory already touched (what load does on the second copy).
    let mut warm = vec![0f32; bytes / 4];
    let (t_copy_warm, _) = best(3, || {
        let mut at = 0;
        for a in &arrays {
            warm[at..at + a.len()].copy_from_slice(a);
            at += a.len();
        }
        black_box(&warm);
    });
    drop(warm);

    let (t_save, saved) = best(3, || checkpoint::save(&opt).unwrap());
    let (t_load, loaded) = best(3, || checkpoint::load(&saved).unwrap());
    assert!(loaded == opt, "loaded state differs");
    drop(loaded);
    let mut buf = Vec::new();
    let (t_save_into, _) = best(3, || checkpoint::save_into(&opt, &mut buf).unwrap());
    drop(buf);
    let mut target = checkpoint::load(&saved).unwrap();
    let (t_restore, _) = best(3, || checkpoint::restore(&mut target, &saved).unwrap());
    drop(target);
    let (t_hash, _) = best(3, || black_box(xxhash_rust::xxh3::xxh3_64(&saved)));

    let path = dir.join("vsgd-throughput.vsgdckpt");
    let (t_save_file, _) = best(3, || checkpoint::save_file(&opt, &path).unwrap());
    drop(saved);
    let (t_load_file, loaded) = best(3, || checkpoint::load_file(&path).unwrap());
    assert!(loaded == opt);
    drop(loaded);
    let _ = std::fs::remove_file(&path);

    let rate = |t: f64| gb / t;
    println!(
        "{:<34}{:>9}{:>10}{:>14}",
        "operation", "seconds", "GB/s", "vs memcpy*"
    );
    let row = |name: &str, t: f64, base: f64| {
        println!("{name:<34}{t:>9.3}{:>10.2}{:>14.2}", rate(t), base / t);
    };
    row("memcpy into fresh allocation", t_copy_fresh, t_copy_fresh);
    row("memcpy into touched memory", t_copy_warm, t_copy_fresh);
    row("xxh3-64 of the checkpoint", t_hash, t_copy_fresh);
    row("save (to Vec<u8>)", t_save, t_copy_fresh);
    row("load (from &[u8])", t_load, t_copy_fresh);
    row("save_into (reused buffer)", t_save_into, t_copy_warm);
    row("restore (into existing tensors)", t_restore, t_copy_warm);
    row("save_file (fsync, rename)", t_save_file, t_copy_fresh);
    row("load_file (read + load)", t_load_file, t_copy_fresh);
    println!(
        "fresh memory: save {:.2}x, load {:.2}x memcpy speed; touched memory: save_into {:.2}x, \
         restore {:.2}x (goal >= 0.5)",
        t_copy_fresh / t_save,
        t_copy_fresh / t_load,
        t_copy_warm / t_save_into,
        t_copy_warm / t_restore
    );
}
