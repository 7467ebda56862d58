//! truffles-bot: one tenant's runtime (webhook server, pipeline, scheduled jobs).
//! The runtime is not built yet (see README, "Not done yet").

fn main() -> std::process::ExitCode {
    eprintln!(
        "truffles-bot {}: the runtime is not implemented yet",
        env!("CARGO_PKG_VERSION")
    );
    std::process::ExitCode::FAILURE
}
