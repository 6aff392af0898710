//! The `quiver` command. `serve`, `topic`, `produce`, `consume` and friends arrive with the
//! broker and CLI issues; for now it only says so.

fn main() {
    eprintln!(
        "quiver {}: the storage engine is in place; `quiver serve` arrives with the broker node (see CHANGELOG.md)",
        env!("CARGO_PKG_VERSION")
    );
    std::process::exit(2);
}
