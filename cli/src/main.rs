//! `vsgd`: the command-line tool. `vsgd replay CASE.json [--dtype f32|f64]` runs a conformance
//! case through the owning optimizer and prints the result as JSON (see `replay.rs`).

mod bench;
mod bench_mixed;
mod inspect;
mod placement;
mod pool;
mod replay;
mod replay_ckpt;

use std::process::ExitCode;

const USAGE: &str = "\
usage:
  vsgd replay CASE.json [--dtype f32|f64]   run a conformance case, print JSON to stdout
       [--checkpoint-at S]                  ... saving after step S to a file and resuming from it
       [--save FILE]                        ... saving the final optimizer state to FILE
  vsgd inspect FILE                         describe a checkpoint (fails, one line on stderr, if invalid)
  vsgd bench [--json] [--algorithm NAME|all] [--elements N] [--threads T] [--tensors K]
       [--mixed] [--placement]              time the step against the memory-bandwidth ceiling
  vsgd help                                 this text";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("replay") => replay::main(&args[1..]),
        Some("inspect") => inspect::main(&args[1..]),
        Some("bench") => bench::main(&args[1..]),
        Some("help" | "--help" | "-h") => {
            println!("{USAGE}");
            Ok(())
        }
        Some(other) => Err(format!("unknown command '{other}'\n{USAGE}")),
        None => Err(USAGE.to_string()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(msg) => {
            eprintln!("vsgd: {msg}");
            ExitCode::from(2)
        }
    }
}
