//! truffles-operator: reconciles TrufflesClient and Subscription resources.
//! The reconcile loop is not built yet (see README, "Not done yet").

fn main() -> std::process::ExitCode {
    eprintln!(
        "truffles-operator {}: the reconciler is not implemented yet",
        env!("CARGO_PKG_VERSION")
    );
    std::process::ExitCode::FAILURE
}
