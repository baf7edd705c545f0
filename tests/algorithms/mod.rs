//! The algorithm list and configurations shared by the mixed-precision tests (kept out of
//! `tests/common`, which the library's own unit tests include too).

/// Every algorithm.
#[allow(dead_code)] // not every test file uses it
pub const ALGORITHMS: [vsgd::Algorithm; 5] = [
    vsgd::Algorithm::Vsgd,
    vsgd::Algorithm::ConstantVsgd,
    vsgd::Algorithm::Adam,
    vsgd::Algorithm::AdamW,
    vsgd::Algorithm::Sgdm,
];

/// The defaults of `a`, with AdamW's weight decay (0.01) and SGD's momentum (0.9) switched on,
/// so every term of every rule runs.
#[allow(dead_code)] // not every test file uses it
pub fn config_with_every_term(a: vsgd::Algorithm) -> vsgd::Config {
    let mut c = vsgd::Config::default_for(a);
    if a == vsgd::Algorithm::AdamW {
        c.set("weight_decay", 0.01).unwrap();
    }
    if a == vsgd::Algorithm::Sgdm {
        c.set("momentum", 0.9).unwrap();
    }
    c
}
