//! `sqlx::migrate!` embeds `migrations/` at compile time, but cargo does not know the macro
//! read that directory: without this, adding a migration file does not rebuild the binary,
//! which then runs without it.
fn main() {
    println!("cargo:rerun-if-changed=../migrations");
}
