//! docs/spec.md is a verbatim copy of the shared specification (plus a header comment), so the
//! rules are in the repository. When the shared original is present beside the checkout
//! (`../shared/spec/algorithms.md`, as on the project's machines) the copy must equal it;
//! elsewhere (a clone on its own) there is nothing to compare and the test says so.

#[test]
fn docs_spec_is_the_shared_spec() {
    let root = env!("CARGO_MANIFEST_DIR");
    let copy = std::fs::read_to_string(format!("{root}/docs/spec.md")).unwrap();
    let body = copy
        .split_once("-->\n\n")
        .expect("docs/spec.md starts with its provenance comment")
        .1;
    assert!(body.starts_with("# The update rules, exactly"));
    match std::fs::read_to_string(format!("{root}/../shared/spec/algorithms.md")) {
        Ok(shared) => assert_eq!(
            body, shared,
            "docs/spec.md differs from ../shared/spec/algorithms.md: copy it again"
        ),
        Err(_) => eprintln!("SKIPPED comparison: ../shared/spec/algorithms.md is not present"),
    }
}
