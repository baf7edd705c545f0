//! Crash safety: a child process saves a checkpoint over and over and is killed (SIGKILL on
//! Unix) at random moments, at least 200 times; after every kill the file must load and hold
//! one complete generation, the previous or a newer one, never a mix.
//!
//! The child is this same test binary, re-run with `VSGD_CRASH_CHILD` set.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use vsgd::{checkpoint, Algorithm, Config, Optimizer, TensorId, TensorSpec};

const ELEMENTS: usize = 1 << 15;
const KILLS: usize = 200;

/// Generation `g`: every state value is `g`, every step counter is `g`.
fn generation(g: u64) -> Optimizer {
    let mut opt = Optimizer::new(Config::default_for(Algorithm::Vsgd)).unwrap();
    let w = opt
        .add_tensor(TensorSpec::new(&[ELEMENTS / 2, 2]).name("w"))
        .unwrap();
    for name in ["mug", "bg", "bhg"] {
        opt.state_mut::<f32>(w, name).unwrap().fill(g as f32);
    }
    opt
}

/// The generation a loaded file holds, if it is one complete generation.
fn generation_of(opt: &Optimizer) -> Option<u64> {
    let w = TensorId(0);
    let g = opt.state::<f32>(w, "mug").ok()?[0];
    for name in ["mug", "bg", "bhg"] {
        if opt.state::<f32>(w, name).ok()?.iter().any(|&x| x != g) {
            return None;
        }
    }
    Some(g as u64)
}

fn child(path: &Path, start: u64) -> ! {
    let mut g = start;
    loop {
        checkpoint::save_file(&generation(g), path).unwrap();
        g += 1;
    }
}

mod common;
use common::Rng;

#[test]
fn killed_saves_leave_old_or_new_file() {
    if let Ok(path) = std::env::var("VSGD_CRASH_CHILD") {
        let start = std::env::var("VSGD_CRASH_START").unwrap().parse().unwrap();
        child(Path::new(&path), start);
    }
    let dir: PathBuf = std::env::temp_dir().join(format!("vsgd-crash-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("state.vsgdckpt");
    checkpoint::save_file(&generation(1), &path).unwrap();
    let exe = std::env::current_exe().unwrap();
    let mut rng = Rng(std::process::id() as u64);
    let (mut last, mut advanced, mut mid_save) = (1u64, 0usize, 0usize);
    for kill in 0..KILLS {
        let mut c = Command::new(&exe)
            .args([
                "killed_saves_leave_old_or_new_file",
                "--exact",
                "--test-threads=1",
            ])
            .env("VSGD_CRASH_CHILD", &path)
            .env("VSGD_CRASH_START", (last + 1).to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_micros(2_000 + rng.below(60_000)));
        c.kill().unwrap();
        c.wait().unwrap();
        let opt = checkpoint::load_file(&path)
            .unwrap_or_else(|e| panic!("after kill {kill}: the file does not load: {e}"));
        let g = generation_of(&opt)
            .unwrap_or_else(|| panic!("after kill {kill}: the file mixes generations"));
        assert!(
            g >= last,
            "after kill {kill}: generation went back from {last} to {g}"
        );
        if g > last {
            advanced += 1;
        }
        last = g;
        // A temp file left behind means the kill landed inside a save.
        for e in std::fs::read_dir(&dir).unwrap() {
            let e = e.unwrap();
            if e.path() != path {
                mid_save += 1;
                std::fs::remove_file(e.path()).unwrap();
            }
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
    println!("{KILLS} kills: {mid_save} inside a save, {advanced} after a completed one");
    // Both kinds of moment were hit, or the test proved nothing.
    assert!(
        mid_save >= KILLS / 10,
        "only {mid_save} kills landed inside a save"
    );
    assert!(
        advanced >= KILLS / 10,
        "only {advanced} kills followed a completed save"
    );
}
