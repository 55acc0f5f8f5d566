// `sqlx::migrate!` embeds migrations/ at compile time, but cargo does not
// know the macro reads that directory: without this a new migration file
// left the binary as it was (found when 0002 did not reach the benchmark).
fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
